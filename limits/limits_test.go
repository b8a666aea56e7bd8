package limits

import (
	"errors"
	"strings"
	"testing"
)

func TestMax(t *testing.T) {
	l := &Limit{Env: "LORAFIT_TEST_LIMIT", What: "things", Default: 7}
	for _, tc := range []struct {
		env     string
		want    int64
		wantErr string
	}{
		{"", 7, ""},
		{"123", 123, ""},
		{"0x10", 16, ""},
		{"1_000_000", 1000000, ""},
		{"0", 0, `LORAFIT_TEST_LIMIT="0": want a positive integer`},
		{"-5", 0, "want a positive integer"},
		{"lots", 0, "want a positive integer (things; default 7)"},
		{"99999999999999999999", 0, "want a positive integer"},
	} {
		t.Run(tc.env, func(t *testing.T) {
			t.Setenv(l.Env, tc.env)
			got, err := l.Max()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Max() = %d, %v; want error containing %q", got, err, tc.wantErr)
				}
				if cerr := l.Check(1); cerr == nil {
					t.Error("Check passed despite a malformed variable")
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Max() = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	t.Setenv(ImagePixels.Env, "")
	if err := ImagePixels.Check(ImagePixels.Default); err != nil {
		t.Errorf("the default itself is refused: %v", err)
	}
	err := ImagePixels.Check(ImagePixels.Default + 1)
	var ee *ExceededError
	if !errors.As(err, &ee) || ee.Got != ImagePixels.Default+1 || ee.Max != ImagePixels.Default || ee.Limit != ImagePixels {
		t.Fatalf("err = %#v", err)
	}
	if want := "40000001 pixels in one image is over the limit of 40000000 (set LORAFIT_MAX_IMAGE_PIXELS to raise it)"; err.Error() != want {
		t.Errorf("message %q\nwant        %q", err, want)
	}
	t.Setenv(ImagePixels.Env, "50000000")
	if err := ImagePixels.Check(ImagePixels.Default + 1); err != nil {
		t.Errorf("raised limit still refuses: %v", err)
	}
}

// TestDefaultsFitRealInputs pins the defaults against the inputs the
// package promises to accept, and checks every limit can be named.
func TestDefaultsFitRealInputs(t *testing.T) {
	const resnet152FP32 = 60_192_808 * 4 // torchvision's parameter count
	for _, tc := range []struct {
		l *Limit
		n int64
	}{
		{ImagePixels, 3840 * 2160},
		{CheckpointBytes, resnet152FP32 + 1<<20},
		{IDXBytes, 60000 * 28 * 28},
		{ConfigBytes, 64 << 10},
		{ResultsBytes, 1 << 20}, // a 5-case study's is 37 KB
	} {
		t.Setenv(tc.l.Env, "")
		if err := tc.l.Check(tc.n); err != nil {
			t.Errorf("%s refuses a real input: %v", tc.l.Env, err)
		}
	}
	seen := map[string]bool{}
	for _, l := range All {
		if !strings.HasPrefix(l.Env, "LORAFIT_MAX_") || seen[l.Env] || l.What == "" || l.Default <= 0 {
			t.Errorf("bad limit %+v", l)
		}
		seen[l.Env] = true
	}
}
