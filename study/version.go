package study

import (
	"encoding/binary"
	"encoding/hex"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/lorafit/lorafit/data"
	"github.com/lorafit/lorafit/internal/digest"
)

// Version is lorafit's version as this binary knows it: the module version
// (`go install …@v1.2.3` or a pseudo-version), else the VCS revision it was
// built from ("+dirty" with uncommitted changes), else "devel".
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	v := bi.Main.Version
	if v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if rev != "" {
		return "devel " + rev + dirty
	}
	return "devel"
}

// DataDigest is a SHA-256 over a dataset's images, labels, shape and class
// names: which images a run trained on, whatever produced them.
func DataDigest(d *data.Dataset) string {
	h := digest.New()
	var hdr [32]byte
	for i, v := range []int{d.N, d.H, d.W, d.C} {
		binary.LittleEndian.PutUint64(hdr[8*i:], uint64(v))
	}
	h.Write(hdr[:])
	h.Write([]byte(strconv.Quote(strings.Join(d.ClassNames, "\x00"))))
	labels := make([]byte, 4*len(d.Labels))
	for i, l := range d.Labels {
		binary.LittleEndian.PutUint32(labels[4*i:], uint32(l))
	}
	h.Write(labels)
	h.Write(d.Images)
	return hex.EncodeToString(h.Sum(nil))
}
