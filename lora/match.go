package lora

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/lorafit/lorafit/nn"
)

// Target is one module LoRA wraps, with its own rank, alpha and scaling.
type Target struct {
	Module  nn.Module
	R       int
	Alpha   float64
	Scaling float64
}

// compile is regexp.Compile with a hint for Python-only syntax (Go's RE2
// has no look-arounds or back-references), cached: matching a config
// against a network's few hundred module names reuses one compiled pattern.
func compile(expr string) (*regexp.Regexp, error) {
	if re, ok := compiled.Load(expr); ok {
		return re.(*regexp.Regexp), nil
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, fmt.Errorf("%w (Go regexps are RE2: no look-arounds or back-references)", err)
	}
	compiled.Store(expr, re)
	return re, nil
}

var compiled sync.Map // pattern → *regexp.Regexp

// Matches reports whether target_modules selects the module name, exactly
// as PEFT's check_target_module_exists does.
func (t Targets) Matches(name string) (bool, error) {
	if t.Regex != "" {
		re, err := compile(`^(?:` + t.Regex + `)$`)
		if err != nil {
			return false, fmt.Errorf("target_modules %q: %w", t.Regex, err)
		}
		return re.MatchString(name), nil
	}
	for _, s := range t.List {
		if name == s || strings.HasSuffix(name, "."+s) {
			return true, nil
		}
	}
	return false, nil
}

// Match selects the targets among a network's leaf modules. As in PEFT,
// every matched module must be one LoRA can wrap (Conv2d or Linear), and
// containers (layer1, layer1.2) count as modules too. A pattern that
// matches nothing is an error listing the closest module names: a regex
// must match the whole name, which is easy to get wrong.
func Match(c *Config, modules []nn.Module) ([]Target, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.TargetModules.Empty() {
		return nil, nil
	}
	var targets []Target
	var unsupported []string
	for _, name := range AllNames(modules) {
		ok, err := c.TargetModules.Matches(name)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		m, leaf := find(modules, name)
		if !leaf || (m.Type != nn.Conv2d && m.Type != nn.Linear) {
			kind := "a container"
			if leaf {
				kind = string(m.Type)
			}
			unsupported = append(unsupported, fmt.Sprintf("%s (%s)", name, kind))
			continue
		}
		r, alpha, err := c.RankAlpha(name)
		if err != nil {
			return nil, err
		}
		if full := min(m.Out, m.In*max(m.Kernel, 1)*max(m.Kernel, 1)); r > full {
			return nil, fmt.Errorf("target %s (%s %d→%d): rank %d exceeds the rank of its weight (%d): a larger r adds parameters, not expressiveness", name, m.Type, m.In, m.Out, r, full)
		}
		if g := m.NumGroups(); r%g != 0 {
			return nil, fmt.Errorf("target %s is a conv with groups=%d and rank %d: as in PEFT, the rank of a grouped conv must be divisible by its groups (lora_B is grouped too); pick a rank that is (rank_pattern can set one for this module) or do not target it", name, g, r)
		}
		targets = append(targets, Target{Module: m, R: r, Alpha: alpha, Scaling: c.Scaling(r, alpha)})
	}
	if len(unsupported) > 0 {
		return nil, fmt.Errorf("target_modules %q matches modules LoRA cannot wrap (only Conv2d and Linear): %s",
			c.TargetModules, strings.Join(unsupported, ", "))
	}
	if len(targets) == 0 {
		return nil, fmt.Errorf("target_modules %q matches no module (a regex must match the whole name, as in PEFT); closest names: %s",
			c.TargetModules, strings.Join(Closest(c.TargetModules.String(), AllNames(modules), 5), ", "))
	}
	return targets, nil
}

// AllNames lists leaf modules and the containers above them, in order of
// first appearance, as torch's named_modules does.
func AllNames(modules []nn.Module) []string {
	seen := map[string]bool{}
	var names []string
	for _, m := range modules {
		parts := strings.Split(m.Name, ".")
		for i := 1; i <= len(parts); i++ {
			n := strings.Join(parts[:i], ".")
			if !seen[n] {
				seen[n] = true
				names = append(names, n)
			}
		}
	}
	return names
}

func find(modules []nn.Module, name string) (nn.Module, bool) {
	for _, m := range modules {
		if m.Name == name {
			return m, true
		}
	}
	return nn.Module{}, false
}

// Closest returns up to n names nearest to pattern by edit distance.
func Closest(pattern string, names []string, n int) []string {
	type scored struct {
		name string
		d    int
	}
	var all []scored
	for _, name := range names {
		all = append(all, scored{name, editDistance(pattern, name)})
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].d < all[j].d })
	var out []string
	for i := 0; i < len(all) && i < n; i++ {
		out = append(out, all[i].name)
	}
	return out
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
