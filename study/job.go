// Package study runs fine-tuning jobs end to end: an adaptation trained on
// a base, evaluated and saved as a PEFT-format adapter (Job), and the
// founding study — ResNet-50 fine-tuned on MNIST four ways on one base, with
// a report (Run). The CLI's train and experiment verbs are these functions.
package study

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/gomlx/compute"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/checkpoint/safetensors"
	"github.com/lorafit/lorafit/classifier"
	"github.com/lorafit/lorafit/data"
	"github.com/lorafit/lorafit/features"
	"github.com/lorafit/lorafit/report"
	"github.com/lorafit/lorafit/train"
)

// Job is one adaptation to train on a base, evaluate and save.
type Job struct {
	Backend compute.Backend
	Base    *backbone.Base
	// BaseInfo identifies the base in the saved adapter's lorafit.json.
	BaseInfo adapter.BaseInfo
	// Adapter is the initialized adapter to train (it is not modified).
	Adapter     *adapter.Adapter
	Train, Test *data.Dataset
	// Config is the recipe; Checkpoint is set to Dir/checkpoint.safetensors.
	// Config.Features may hold the training set's frozen-prefix features.
	Config train.Config
	// TestFeatures, if set, holds the test set's, for evaluation.
	TestFeatures *features.Cache
	// Dir receives Dir/adapter; the checkpoint lives there while training
	// and is removed once the adapter is saved.
	Dir string
	// SaveModel also writes Dir/model.safetensors: the adapter merged into
	// the base, torchvision's keys (what full fine-tuning produces).
	SaveModel bool
	Log       io.Writer // progress and notes; nil for silence
}

// Run trains, evaluates on the test set and saves the adapter under
// Dir/adapter, returning the measurements.
func (j *Job) Run(ctx context.Context) (*report.CaseResult, error) {
	log := j.Log
	if log == nil {
		log = io.Discard
	}
	if err := os.MkdirAll(j.Dir, 0o755); err != nil {
		return nil, err
	}
	cfg := j.Config
	cfg.Checkpoint = filepath.Join(j.Dir, "checkpoint.safetensors")
	cfg.Progress = j.Log
	params := j.Adapter.Params()
	cr := &report.CaseResult{Description: Describe(j.Adapter), Trainable: params.Trainable, Total: params.Total,
		AdapterParts: AdapterParts(params)}
	tr, err := train.New(j.Backend, j.Base, j.Adapter, cfg)
	if err != nil {
		return nil, err
	}
	fit, err := tr.Fit(ctx, j.Train)
	if err != nil {
		return nil, err
	}
	trained := tr.Adapter()
	cr.History, cr.TrainSeconds, cr.TrainImgPerSec = fit.History, fit.Seconds, fit.ImgPerSec
	cr.ResumedAtStep = fit.ResumedAt
	var test train.Data = j.Test
	p := classifier.NewPredictor(j.Backend, j.Base, trained)
	if f := j.TestFeatures; f != nil {
		test = features.Cached{Cache: f, Data: j.Test}
		p = classifier.NewStages(j.Backend, j.Base, trained, f.Stage, len(j.Base.Net.Stages()))
	}
	ev, err := train.Evaluate(ctx, p, test, cfg.Preprocess, cfg.Batch)
	if err != nil {
		return nil, err
	}
	cr.Accuracy, cr.MeanLoss, cr.PerClassAccuracy, cr.Confusion, cr.EvalImgPerSec = ev.Accuracy, ev.MeanLoss, ev.PerClass, ev.Confusion, ev.ImgPerSec
	adapterDir := filepath.Join(j.Dir, "adapter")
	trained.Info = adapter.Info{
		Base:       j.BaseInfo,
		ClassNames: j.Train.ClassNames,
		Preprocess: cfg.Preprocess,
		Dataset:    DatasetName(j.Train.Name),
		Metrics:    map[string]any{"accuracy": ev.Accuracy, "mean_loss": ev.MeanLoss, "test_images": ev.N, "epochs": cfg.Epochs},
	}
	if err := trained.Save(adapterDir, checkpoint.F32); err != nil {
		return nil, err
	}
	st, err := os.Stat(filepath.Join(adapterDir, adapter.WeightsFile))
	if err != nil {
		return nil, err
	}
	cr.AdapterDir, cr.AdapterBytes = adapterDir, st.Size()
	if j.SaveModel {
		merged, err := classifier.Merge(j.Base, trained)
		if err != nil {
			return nil, err
		}
		cr.ModelFile = filepath.Join(j.Dir, "model.safetensors")
		meta := map[string]string{"format": "pt", "lorafit.trained_from": j.BaseInfo.Weights}
		if err := safetensors.Save(cr.ModelFile, merged, meta); err != nil {
			return nil, err
		}
	}
	_ = os.Remove(cfg.Checkpoint) // the adapter is the result now
	fmt.Fprintf(log, "   test accuracy %.4f, adapter %s bytes, %.0f s\n", ev.Accuracy, report.Thousands(cr.AdapterBytes), fit.Seconds)
	return cr, nil
}

// AdapterParts splits an adapter's fp32 tensor bytes by what they are:
// "lora", and each saved top-level module ("fc", "head", …).
func AdapterParts(p adapter.ParamReport) map[string]int64 {
	parts := map[string]int64{}
	for _, mp := range p.Modules {
		part := mp.Kind // "lora"
		if mp.Kind == "saved" {
			part, _, _ = strings.Cut(mp.Module, ".")
		}
		parts[part] += 4 * int64(mp.Params)
	}
	return parts
}

// Describe says in a few words what an adapter trains.
func Describe(a *adapter.Adapter) string {
	s := a.Spec
	var parts []string
	if s.IsFull(a.Net()) {
		parts = append(parts, "full fine-tuning (every parameter, batch norms in train mode)")
		if s.ReplaceFC {
			parts = append(parts, fmt.Sprintf("fc replaced by Linear(%d→%d)", a.Net().FeatureDim(), s.NumClasses))
		}
		if s.Head != nil {
			parts = append(parts, "head "+s.Head.String())
		}
		return strings.Join(parts, ", ")
	}
	if !s.LoRA.TargetModules.Empty() {
		parts = append(parts, fmt.Sprintf("LoRA %s r=%d alpha=%g", s.LoRA.TargetModules, s.LoRA.R, s.LoRA.LoraAlpha))
	}
	switch {
	case s.ReplaceFC:
		parts = append(parts, fmt.Sprintf("fc replaced by Linear(%d→%d)", a.Net().FeatureDim(), s.NumClasses))
	case a.IsSaved("fc"):
		parts = append(parts, "fc trainable")
	default:
		parts = append(parts, "fc frozen")
	}
	for _, m := range s.LoRA.ModulesToSave {
		if m != "fc" && m != "head" {
			parts = append(parts, m+" trainable")
		}
	}
	if s.Head != nil {
		parts = append(parts, "head "+s.Head.String())
	}
	return strings.Join(parts, ", ")
}

// DatasetName drops the split from a dataset's name ("mnist/train[:2000]"
// is "mnist"): reports name splits themselves.
func DatasetName(name string) string {
	base, _, _ := strings.Cut(name, "/")
	return base
}
