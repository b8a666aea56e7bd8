// Package study runs fine-tuning jobs end to end: an adaptation trained on
// a base, evaluated and saved as a PEFT-format adapter (Job), and the
// founding study — ResNet-50 fine-tuned on MNIST four ways on one base, with
// a report (Run). The CLI's train and experiment verbs are these functions.
package study

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/gomlx/compute"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/checkpoint"
	"github.com/lorafit/lorafit/checkpoint/safetensors"
	"github.com/lorafit/lorafit/classifier"
	"github.com/lorafit/lorafit/data"
	"github.com/lorafit/lorafit/features"
	"github.com/lorafit/lorafit/fsutil"
	"github.com/lorafit/lorafit/report"
	"github.com/lorafit/lorafit/train"
)

// ResultFile is what a finished job leaves in its Dir besides the adapter:
// its measurements and identity (report.CaseResult as JSON).
const ResultFile = "result.json"

// Job is one adaptation to train on a base, evaluate and save.
type Job struct {
	Backend compute.Backend
	Base    *backbone.Base
	// BaseInfo identifies the base in the saved adapter's lorafit.json.
	BaseInfo adapter.BaseInfo
	// Adapter is the initialized adapter to train (it is not modified).
	Adapter     *adapter.Adapter
	Train, Test *data.Dataset
	// Config is the recipe; Checkpoint is set to Dir/checkpoint.safetensors
	// and Identity completed with the data, the base and lorafit's version.
	// Config.Features may hold the training set's frozen-prefix features.
	Config train.Config
	// TestFeatures, if set, holds the test set's, for evaluation.
	TestFeatures *features.Cache
	// Dir receives Dir/adapter and Dir/result.json; the checkpoint lives
	// there while training and is removed once both are saved.
	Dir string
	// SaveModel also writes Dir/model.safetensors: the adapter merged into
	// the base, torchvision's keys (what full fine-tuning produces).
	SaveModel bool
	Case      int       // the founding study's case number, for result.json; 0 for none
	Log       io.Writer // progress and notes; nil for silence

	identity map[string]string
}

// CheckpointFile is the name of a job's checkpoint in its Dir.
const CheckpointFile = "checkpoint.safetensors"

// config is the recipe as the trainer gets it.
func (j *Job) config() train.Config {
	cfg := j.Config
	cfg.Checkpoint = filepath.Join(j.Dir, CheckpointFile)
	cfg.Progress = j.Log
	if j.identity == nil {
		j.identity = map[string]string{
			"base.arch":         j.BaseInfo.Arch,
			"base.sha256":       j.BaseInfo.SHA256,
			"data.train":        j.Train.Name,
			"data.train.images": strconv.Itoa(j.Train.Len()),
			"data.train.sha256": DataDigest(j.Train),
			"data.test":         j.Test.Name,
			"data.test.images":  strconv.Itoa(j.Test.Len()),
			"data.test.sha256":  DataDigest(j.Test),
			"lorafit.version":   Version(),
		}
		maps.Copy(j.identity, j.Config.Identity)
	}
	cfg.Identity = j.identity
	return cfg
}

// Identity is everything that defines this job's run: the recipe, the
// adapter's spec, the data (names, sizes, digests), the base's sha256 and
// lorafit's version. Checkpoints and result.json record it; resuming
// compares it field by field.
func (j *Job) Identity() map[string]string { return train.RunIdentity(j.config(), j.Adapter) }

// Finished returns the result a previous run of this job left in Dir, or
// nil if it has not finished. A result of another run — any difference in
// its identity — is an *train.IdentityError naming each field.
func (j *Job) Finished() (*report.CaseResult, error) {
	path := filepath.Join(j.Dir, ResultFile)
	raw, err := os.ReadFile(path) // lorafit's own output (a confusion matrix can be MBs)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var cr report.CaseResult
	if err := json.Unmarshal(raw, &cr); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := train.CheckIdentity(path, cr.Identity, j.Identity()); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(j.Dir, "adapter", adapter.WeightsFile)); err != nil {
		return nil, fmt.Errorf("%s says the run finished, but its adapter is missing: %w", path, err)
	}
	return &cr, nil
}

// Run trains, evaluates on the test set and saves the adapter under
// Dir/adapter and the measurements in Dir/result.json, returning them.
func (j *Job) Run(ctx context.Context) (*report.CaseResult, error) {
	log := j.Log
	if log == nil {
		log = io.Discard
	}
	if err := os.MkdirAll(j.Dir, 0o755); err != nil {
		return nil, err
	}
	cfg := j.config()
	params := j.Adapter.Params()
	cr := &report.CaseResult{Case: j.Case, Description: Describe(j.Adapter), Trainable: params.Trainable, Total: params.Total,
		AdapterParts: AdapterParts(params), Identity: j.Identity()}
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
	if err := fsutil.WriteJSON(filepath.Join(j.Dir, ResultFile), cr); err != nil {
		return nil, err
	}
	_ = os.Remove(cfg.Checkpoint) // the adapter and result.json are the result now
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
