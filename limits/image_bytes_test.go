package limits

import (
	"os"
	"strings"
	"testing"

	"github.com/lorafit/lorafit/internal/memcheck"
)

// TestDecodeImageBytes: an upload in memory gets the checks a file gets,
// before any pixel is allocated, with errors naming the upload.
func TestDecodeImageBytes(t *testing.T) {
	rgb, err := os.ReadFile("testdata/rgb.png")
	if err != nil {
		t.Fatal(err)
	}
	img, err := DecodeImageBytes(rgb, "upload 1")
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 13 || b.Dy() != 7 {
		t.Errorf("decoded %v, want 13×7", b)
	}
	if cfg, err := ImageConfigBytes(rgb, "upload 1"); err != nil || cfg.Width != 13 || cfg.Height != 7 {
		t.Errorf("config %+v, %v", cfg, err)
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"huge", pngHeader(100000, 100000, 8, 2, nil), "upload 2: 100000×100000 image: 10000000000 pixels in one image is over the limit"},
		{"lying", pngHeader(6000, 6000, 8, 2, nil), "upload 2: header says 6000×6000 pixels, more than a 33-byte png file can hold"},
		{"text", []byte("hello"), "upload 2: not a readable PNG or JPEG image"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			memcheck.Bound(t, len(tc.b), 64, 1<<20, func() { _, err = DecodeImageBytes(tc.b, "upload 2") })
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want …%s", err, tc.want)
			}
			if _, err := ImageConfigBytes(tc.b, "upload 2"); err == nil {
				t.Error("ImageConfigBytes accepted it")
			}
		})
	}
}
