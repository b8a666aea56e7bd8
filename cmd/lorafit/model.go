package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"strings"

	"github.com/lorafit/lorafit/classifier"
	"github.com/lorafit/lorafit/lora"
	"github.com/lorafit/lorafit/weights"
)

// modelFlags are the flags every verb that builds a network shares.
type modelFlags struct {
	weights, arch, backend, adapter string
	download, allowMismatch         bool

	// info is the loaded adapter's lorafit.json (nil without --adapter):
	// image size, normalization and class names it was trained with.
	info *classifier.Info
}

func (m *modelFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&m.weights, "weights", "resnet50/IMAGENET1K_V2", "registry name (see: lorafit weights list), a .pth/.safetensors file, or random[:SEED] (torchvision's init, seeded)")
	fs.StringVar(&m.arch, "model", "", "architecture: resnet18|34|50|101|152 (default: read off the weights; resnet50 for random)")
	fs.StringVar(&m.backend, "backend", "", "GoMLX backend: go (pure Go, default), or xla:cpu / xla:cuda in a -tags xla build (default $GOMLX_BACKEND or go)")
	fs.StringVar(&m.adapter, "adapter", "", "adapter directory (adapter_config.json + adapter_model.safetensors) to apply to the base weights")
	fs.BoolVar(&m.download, "download", true, "download registry weights that are not cached yet")
	fs.BoolVar(&m.allowMismatch, "allow-base-mismatch", false, "load an adapter even if it was trained on other base weights (with a warning)")
}

// load opens the weights, checks them against --model, builds the network
// and applies --adapter.
func (m *modelFlags) load(ctx context.Context) (*classifier.Model, *weights.Source, error) {
	sd, src, err := weights.Open(ctx, m.weights, weights.OpenOptions{Arch: m.arch, Download: m.download, Progress: errOut})
	if err != nil {
		return nil, nil, err
	}
	if m.adapter == "" {
		net, err := classifier.FromStateDict(sd, m.arch, src.Spec)
		if err != nil {
			return nil, nil, err
		}
		slog.Info("model ready", "arch", net.Base.Config.Describe(), "weights", src.String())
		return net, src, nil
	}
	a, err := classifier.ReadAdapter(m.adapter)
	if err != nil {
		return nil, nil, err
	}
	warning, err := a.CheckBase(src.SHA256, m.allowMismatch)
	if err != nil {
		return nil, nil, err
	}
	if warning != "" {
		slog.Warn(warning)
	}
	base, err := classifier.BaseFromStateDict(sd, m.arch, src.Spec)
	if err != nil {
		return nil, nil, err
	}
	net, err := classifier.New(base, a.Spec)
	if err != nil {
		return nil, nil, fmt.Errorf("adapter %s: %w", m.adapter, err)
	}
	if err := a.Apply(net); err != nil {
		return nil, nil, err
	}
	m.info = &a.Info
	slog.Info("model ready", "arch", base.Config.Describe(), "weights", src.String(), "adapter", m.adapter,
		"lora_modules", len(net.Targets), "head", net.Spec.Head.String())
	return net, src, nil
}

// specFlags choose how to adapt: a preset case or a JSON config, then
// per-field overrides.
type specFlags struct {
	fs                         *flag.FlagSet
	caseN                      int
	config, target, head, save string
	rank                       int
	alpha, dropout             float64
	replaceFC, rslora          bool
	numClasses                 int
	init                       string
}

func (s *specFlags) register(fs *flag.FlagSet) {
	s.fs = fs
	fs.IntVar(&s.caseN, "case", 2, "preset from the founding study, 1-4 (see README)")
	fs.StringVar(&s.config, "config", "", "JSON spec file (as printed by lorafit params --print-config); replaces --case")
	fs.StringVar(&s.target, "target", "", "LoRA target_modules: a regex matching whole module names (PEFT's rule), or a comma list of names/suffixes; 'none' for no LoRA")
	fs.IntVar(&s.rank, "rank", 0, "LoRA rank r")
	fs.Float64Var(&s.alpha, "alpha", 0, "lora_alpha (scaling = alpha/r)")
	fs.Float64Var(&s.dropout, "dropout", 0, "lora_dropout")
	fs.BoolVar(&s.rslora, "rslora", false, "use_rslora: scale by alpha/sqrt(r)")
	fs.StringVar(&s.head, "head", "", "head on the logits: none, linear, or widths like 512,256")
	fs.StringVar(&s.save, "save-modules", "", "modules_to_save, comma list (e.g. fc,head)")
	fs.BoolVar(&s.replaceFC, "replace-fc", false, "replace fc by Linear(features → num-classes)")
	fs.IntVar(&s.numClasses, "num-classes", 0, "classes of the task")
	fs.StringVar(&s.init, "init-lora-weights", "", "true (PEFT default: B=0), gaussian, or false (A and B random)")
}

// resolve builds the Spec: preset or file, then the flags the user set.
func (s *specFlags) resolve() (classifier.Spec, error) {
	var spec classifier.Spec
	var err error
	if s.config != "" {
		spec, err = classifier.ReadSpec(s.config)
	} else {
		spec, err = classifier.Case(s.caseN)
	}
	if err != nil {
		return spec, usageErrorf("%v", err)
	}
	set := map[string]bool{}
	s.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["config"] && set["case"] {
		return spec, usageErrorf("--config and --case exclude each other")
	}
	if set["target"] {
		spec.LoRA.TargetModules = parseTargets(s.target)
	}
	if set["rank"] {
		spec.LoRA.R = s.rank
	}
	if set["alpha"] {
		spec.LoRA.LoraAlpha = s.alpha
	}
	if set["dropout"] {
		spec.LoRA.LoraDropout = s.dropout
	}
	if set["rslora"] {
		spec.LoRA.UseRSLora = s.rslora
	}
	if set["head"] {
		if spec.Head, err = classifier.ParseHead(s.head); err != nil {
			return spec, usageErrorf("%v", err)
		}
	}
	if set["save-modules"] {
		spec.LoRA.ModulesToSave = splitList(s.save)
	}
	if set["replace-fc"] {
		spec.ReplaceFC = s.replaceFC
	}
	if set["num-classes"] {
		spec.NumClasses = s.numClasses
	}
	if set["init-lora-weights"] {
		if err := spec.LoRA.InitLoraWeights.Set(s.init); err != nil {
			return spec, usageErrorf("%v", err)
		}
	}
	return spec, spec.LoRA.Validate()
}

// parseTargets reads --target: a comma list of plain names is a list (suffix
// match); anything with regex syntax is one regex.
func parseTargets(s string) lora.Targets {
	if s == "none" || s == "" {
		return lora.Targets{}
	}
	if strings.ContainsAny(s, `\.*+?[](){}|^$`) {
		return lora.Targets{Regex: s}
	}
	return lora.Targets{List: splitList(s)}
}

func splitList(s string) []string {
	out := []string{}
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
