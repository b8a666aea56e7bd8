// Package limits is lorafit's resource policy in one place. Every size that
// comes from a file (image dimensions, checkpoint bytes, pickle structure,
// JSON config files, idx dimensions) is checked against a named limit before
// anything of that size is allocated, so a corrupt or hostile file yields an
// error naming the file, the limit and the environment variable that raises
// it, never a crash out of memory.
//
// The defaults fit the largest real inputs lorafit expects with room to
// spare (ResNet-152 at fp32 is about 240 MB, a 4K image 8.3 megapixels); a
// user with bigger inputs raises one variable, e.g.
// LORAFIT_MAX_IMAGE_PIXELS=100000000. Variables are read on every check, so
// tests can lower them with t.Setenv.
package limits

import (
	"fmt"
	"os"
	"strconv"
)

// Limit is one named bound.
type Limit struct {
	// Env is the environment variable that overrides Default.
	Env string
	// What names the counted quantity, for messages ("pixels in one image").
	What string
	// Default applies when Env is unset or empty.
	Default int64
}

// The limits lorafit checks, each with the reason for its default.
var (
	// ImagePixels bounds width×height of one decoded image (40 MP: a 4K
	// frame is 8.3 MP, a 50 MP camera raw would need raising it).
	ImagePixels = &Limit{"LORAFIT_MAX_IMAGE_PIXELS", "pixels in one image", 40_000_000}
	// CheckpointBytes bounds the tensor data of one checkpoint file
	// (.pth or .safetensors), all tensors together (4 GiB).
	CheckpointBytes = &Limit{"LORAFIT_MAX_CHECKPOINT_BYTES", "bytes of tensor data in one checkpoint", 4 << 30}
	// PickleBytes bounds the pickle (data.pkl) of a .pth file, and any
	// string in it; a ResNet-152 training checkpoint's is 160 KB (64 MiB).
	PickleBytes = &Limit{"LORAFIT_MAX_PICKLE_BYTES", "bytes in one pickle", 64 << 20}
	// PickleObjects bounds the values one pickle pushes (each costs up
	// to about 200 bytes); a ResNet-152 training checkpoint pushes about
	// 45 thousand (1 Mi).
	PickleObjects = &Limit{"LORAFIT_MAX_PICKLE_OBJECTS", "values pushed by one pickle", 1 << 20}
	// PickleStack bounds the unpickler's stack plus MARK depth; pickle
	// writes containers in batches of 1000, so real stacks stay near 2000
	// (64 Ki).
	PickleStack = &Limit{"LORAFIT_MAX_PICKLE_STACK", "entries on the pickle stack", 1 << 16}
	// PickleMemo bounds the unpickler's memo (1 Mi entries).
	PickleMemo = &Limit{"LORAFIT_MAX_PICKLE_MEMO", "pickle memo entries", 1 << 20}
	// PickleContainer bounds the items of one pickled list, tuple or dict
	// (256 Ki; ResNet-152's state_dict holds 932).
	PickleContainer = &Limit{"LORAFIT_MAX_PICKLE_CONTAINER", "items in one pickled list, tuple or dict", 1 << 18}
	// ConfigBytes bounds a JSON config file such as adapter_config.json or
	// lorafit.json (1 MiB; real ones are under 2 KB).
	ConfigBytes = &Limit{"LORAFIT_MAX_CONFIG_BYTES", "bytes in one JSON config file", 1 << 20}
	// ResultsBytes bounds an experiment's results.json read back by
	// `lorafit compare` (64 MiB; a full study's is well under 1 MB).
	ResultsBytes = &Limit{"LORAFIT_MAX_RESULTS_BYTES", "bytes in one results.json", 64 << 20}
	// IDXBytes bounds the data an idx (MNIST-format) file announces
	// (1 GiB; EMNIST's largest file is 550 MB).
	IDXBytes = &Limit{"LORAFIT_MAX_IDX_BYTES", "bytes of data in one idx file", 1 << 30}
)

// All lists every limit, for documentation and tests.
var All = []*Limit{ImagePixels, CheckpointBytes, PickleBytes, PickleObjects, PickleStack, PickleMemo, PickleContainer, ConfigBytes, ResultsBytes, IDXBytes}

// Max is the limit in force: Env's value if set, else Default. A value that
// is not a positive integer is an error rather than silently the default.
func (l *Limit) Max() (int64, error) {
	s := os.Getenv(l.Env)
	if s == "" {
		return l.Default, nil
	}
	n, err := strconv.ParseInt(s, 0, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s=%q: want a positive integer (%s; default %d)", l.Env, s, l.What, l.Default)
	}
	return n, nil
}

// Check returns an *ExceededError if n is over the limit (or the limit's
// variable is malformed). Callers prefix the file name.
func (l *Limit) Check(n int64) error {
	max, err := l.Max()
	if err != nil {
		return err
	}
	if n > max {
		return &ExceededError{Limit: l, Got: n, Max: max}
	}
	return nil
}

// ExceededError reports a size over a limit; it names the variable that
// raises the limit, so the user knows the one fix if the file is genuine.
type ExceededError struct {
	Limit    *Limit
	Got, Max int64
}

func (e *ExceededError) Error() string {
	return fmt.Sprintf("%d %s is over the limit of %d (set %s to raise it)", e.Got, e.Limit.What, e.Max, e.Limit.Env)
}
