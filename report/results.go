// Package report turns an experiment's numbers into files a person reads
// and shares: results.json (every number), report.md, a self-contained
// report.html, and PNG plots; and several experiments' results.json into
// one comparison (WriteComparison).
package report

import "time"

// Results is everything `lorafit experiment` measured; results.json is
// this struct.
type Results struct {
	Title string `json:"title"`
	// Caveat says what the numbers can and cannot show when the run is
	// too small to compare the cases (--quick); "" for a full run.
	Caveat      string    `json:"caveat,omitempty"`
	StartedAt   time.Time `json:"started_at"`
	WallSeconds float64   `json:"wall_seconds"`
	// PeakRSSBytes is the process's peak resident memory when the results
	// were written (cached features included); 0 where the OS does not say.
	PeakRSSBytes int64   `json:"peak_rss_bytes,omitempty"`
	Command      string  `json:"command"`
	Environment  Env     `json:"environment"`
	Weights      Weights `json:"weights"`
	Data         Data    `json:"data"`
	Budget       Budget  `json:"budget"`
	// Cache says which frozen prefixes were computed once for all cases.
	Cache *Cache `json:"cache,omitempty"`
	// FullModelBytes is the size of the whole adapted network saved in
	// fp32 safetensors: what sharing a model instead of an adapter costs.
	FullModelBytes int64        `json:"full_model_bytes"`
	Cases          []CaseResult `json:"cases"`
}

// Cache describes the frozen-prefix features computed once (package
// features): the stages whose input was cached, their memory and the time
// it took, and what was not cached and why.
type Cache struct {
	Stages  []string `json:"stages"`
	Bytes   int64    `json:"bytes"`
	Seconds float64  `json:"seconds"`
	BF16    bool     `json:"bf16"`
	Views   int      `json:"views"`
	Note    string   `json:"note,omitempty"`
}

// Env is where the experiment ran.
type Env struct {
	Backend   string `json:"backend"`
	Threads   int    `json:"threads"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
	CPU       string `json:"cpu"`
	Hostname  string `json:"hostname"`
	// GoExperiment is the GOEXPERIMENT lorafit was built with ("simd"
	// turns on the vectorized kernels; "" is an order of magnitude slower).
	GoExperiment string `json:"go_experiment"`
	// LorafitVersion is the module version or VCS revision of the build.
	LorafitVersion string `json:"lorafit_version,omitempty"`
}

// Weights says which base weights were used. Random is true when no
// pretrained weights could be had: every report says so prominently.
type Weights struct {
	Spec   string `json:"spec"`
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Random bool   `json:"random"`
	Note   string `json:"note,omitempty"`
}

// Data describes the dataset split used.
type Data struct {
	Name       string   `json:"name"`
	Train      int      `json:"train"`
	Test       int      `json:"test"`
	ImageSize  int      `json:"image_size"`
	Augment    bool     `json:"augment"`
	ClassNames []string `json:"class_names"`
}

// Budget is what every case got: same data, seed and schedule.
type Budget struct {
	Epochs    int     `json:"epochs"`
	Batch     int     `json:"batch"`
	Optimizer string  `json:"optimizer"`
	LR        float64 `json:"lr"`
	Seed      uint64  `json:"seed"`
}

// CaseResult is one case of the study.
type CaseResult struct {
	Case        int    `json:"case"`
	Description string `json:"description"` // e.g. "LoRA .*\.2\.conv3 r=8 α=16 + fc + head 512,256"
	Trainable   int    `json:"trainable_params"`
	Total       int    `json:"total_params"`

	Accuracy         float64   `json:"accuracy"` // on the test split, a fraction in [0,1] like every accuracy here
	MeanLoss         float64   `json:"mean_loss"`
	PerClassAccuracy []float64 `json:"per_class_accuracy"`
	Confusion        [][]int   `json:"confusion"` // [true][predicted]

	AdapterDir   string `json:"adapter_dir"`   // relative to the output directory
	AdapterBytes int64  `json:"adapter_bytes"` // real size of adapter_model.safetensors
	// ModelFile is the whole fine-tuned network (full fine-tuning), if saved.
	ModelFile string `json:"model_file,omitempty"`
	// AdapterParts splits the adapter's tensor bytes by what they are
	// ("lora", "fc", "head"): the founding blog's 7.9 MiB for case 2 is
	// LoRA + fc, with the head shared separately.
	AdapterParts map[string]int64 `json:"adapter_parts,omitempty"`

	// ResumedAtStep is the step a resumed run continued from (0: not resumed).
	ResumedAtStep int `json:"resumed_at_step,omitempty"`
	// Kept: the case had finished before an interruption and was kept by
	// --resume (its identity checked) rather than trained again.
	Kept bool `json:"kept,omitempty"`
	// Identity is everything that defined the case's run (recipe, adapter
	// spec, data, base sha256, lorafit version): what --resume compares.
	Identity map[string]string `json:"identity,omitempty"`

	TrainSeconds   float64 `json:"train_seconds"`
	TrainImgPerSec float64 `json:"train_img_per_sec"`
	EvalImgPerSec  float64 `json:"eval_img_per_sec"`

	History []Point `json:"history"` // training curve
}

// Point is one sample of the training curve: running means since the last
// point.
type Point struct {
	Step     int     `json:"step"`
	Epoch    float64 `json:"epoch"`
	Loss     float64 `json:"loss"`
	Accuracy float64 `json:"accuracy"`
}
