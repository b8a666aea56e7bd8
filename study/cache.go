package study

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/classifier"
	"github.com/lorafit/lorafit/features"
	"github.com/lorafit/lorafit/report"
)

// CacheOptions say whether and how the study computes frozen prefixes once
// (see package features).
type CacheOptions struct {
	Off    bool
	Budget int64 // bytes for the training and test caches together; features.DefaultBudget if 0
	BF16   bool
}

// caches are the frozen-prefix features the cases share, by stage.
type caches struct {
	train, test map[int]*features.Cache
	stageOf     map[int]int // case → the stage it reads from (absent: none)
}

// cacheStage is where a case with a frozen prefix of prefix stages reads
// cached features: cases that freeze the whole backbone (1 and 4) share
// the pooled features, the input of fc; the others read their own prefix
// (cases 2 and 3 share theirs).
func cacheStage(net backbone.Network, prefix int) int {
	return min(prefix, net.StageOf("fc"))
}

// buildCaches computes, in one pass over each split, every stage the cases
// read. Stages that do not fit the budget are dropped, largest first, and
// said so; cases reading them compute their prefix on every step.
func buildCaches(ctx context.Context, o Options, base *backbone.Base, specs map[int]*adapter.Adapter, log io.Writer) (*caches, *report.Cache, error) {
	c := &caches{train: map[int]*features.Cache{}, test: map[int]*features.Cache{}, stageOf: map[int]int{}}
	if o.Cache.Off {
		return c, &report.Cache{Note: "off (--cache=false)"}, nil
	}
	var stages []int
	for n, a := range specs {
		if s := cacheStage(base.Net, classifier.FrozenPrefix(base.Net, a)); s > 0 {
			c.stageOf[n] = s
			if !slices.Contains(stages, s) {
				stages = append(stages, s)
			}
		}
	}
	slices.Sort(stages)
	views := 1
	if o.Config.Augment {
		views = o.Config.Epochs // a fresh shift per image every epoch
	}
	budget := o.Cache.Budget
	if budget == 0 {
		budget = features.DefaultBudget()
	}
	info := &report.Cache{BF16: o.Cache.BF16, Views: views}
	start := time.Now()
	for len(stages) > 0 {
		opts := features.Options{Budget: budget, BF16: o.Cache.BF16, Views: views, Seed: o.Config.Seed, Batch: o.Config.Batch, Progress: o.Log}
		fmt.Fprintf(log, "\n== computing the frozen prefixes once: %s, %d training and %d test images\n", stageNames(base.Net, stages), o.Train.Len(), o.Test.Len())
		prefixes, err := features.NewPrefixes(o.Backend, base, o.Train, o.Config.Preprocess, stages, o.Config.Batch)
		if err != nil {
			return nil, nil, err
		}
		trainC, err := prefixes.Build(ctx, o.Train, opts)
		var over *features.ErrOverBudget
		if errors.As(err, &over) {
			drop := stages[0] // the earliest stage has the largest maps
			fmt.Fprintf(log, "   %v: not caching %s\n", err, base.Net.Stages()[drop])
			info.Note += fmt.Sprintf("%s not cached: %v. ", base.Net.Stages()[drop], err)
			stages = stages[1:]
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		var used int64
		for _, f := range trainC {
			used += f.Bytes()
		}
		opts.Budget, opts.Views, opts.Progress = budget-used, 1, nil
		testC, err := prefixes.Build(ctx, o.Test, opts)
		if errors.As(err, &over) { // cache the training set only
			fmt.Fprintf(log, "   test set: %v: evaluating from images\n", err)
			testC = nil
		} else if err != nil {
			return nil, nil, err
		}
		for i, s := range stages {
			c.train[s] = trainC[i]
			info.Bytes += trainC[i].Bytes()
			if testC != nil {
				c.test[s] = testC[i]
				info.Bytes += testC[i].Bytes()
			}
			info.Stages = append(info.Stages, base.Net.Stages()[s])
		}
		break
	}
	info.Seconds = time.Since(start).Seconds()
	if len(info.Stages) > 0 {
		fmt.Fprintf(log, "   cached %s: %.2f GiB in %.0f s\n", stageNames(base.Net, stages), float64(info.Bytes)/(1<<30), info.Seconds)
	}
	return c, info, nil
}

// stageNames names the stages whose input a cache holds.
func stageNames(net backbone.Network, stages []int) string {
	var s []string
	for _, st := range stages {
		s = append(s, "the input of "+net.Stages()[st])
	}
	return strings.Join(s, " and ")
}

// forCase is case n's training and test features (nil when not cached).
func (c *caches) forCase(n int) (trainF, testF *features.Cache) {
	s, ok := c.stageOf[n]
	if !ok {
		return nil, nil
	}
	return c.train[s], c.test[s]
}
