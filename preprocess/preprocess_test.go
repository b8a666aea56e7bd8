package preprocess

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/lorafit/lorafit/limits"
)

// TestMatchesTorchvision compares with torchvision's ImageClassification on
// images it processed. The identity path (image already crop×crop) must be
// exact; resizing may differ by PIL's 8-bit rounding of intermediate pixels.
func TestMatchesTorchvision(t *testing.T) {
	raw, err := os.ReadFile("testdata/expected.json")
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]json.RawMessage
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		file string
		tol  float64
	}{
		{"gray.png", 1e-5},
		{"rgb.png", 0.02}, // one 8-bit level after dividing by std (0.0174): PIL resamples in fixed point
	} {
		t.Run(tc.file, func(t *testing.T) {
			var exp struct {
				Crop, Resize int
				Values       []float32
			}
			if err := json.Unmarshal(want[tc.file], &exp); err != nil {
				t.Fatal(err)
			}
			img, err := limits.DecodeImage(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			p := Preprocess{Crop: exp.Crop, Resize: exp.Resize, Mean: ImageNetMean, Std: ImageNetStd}
			got := p.Apply(img)
			if len(got) != len(exp.Values) {
				t.Fatalf("%d values, torchvision %d", len(got), len(exp.Values))
			}
			var worst float64
			for i := range got {
				worst = math.Max(worst, math.Abs(float64(got[i]-exp.Values[i])))
			}
			if worst > tc.tol {
				t.Errorf("max |diff| vs torchvision %.4f > %.4f", worst, tc.tol)
			}
		})
	}
}
