package weights

import (
	"encoding/hex"
	"fmt"
	"io"
	"strings"

	"github.com/lorafit/lorafit/internal/digest"
	"github.com/lorafit/lorafit/limits"
)

// HashMismatchError reports a file whose SHA-256 does not start with the
// expected prefix; Actual is the full digest so users can compare with other
// sources.
type HashMismatchError struct {
	Path, Expected, Actual string
}

func (e *HashMismatchError) Error() string {
	return fmt.Sprintf("sha256 mismatch for %s: expected prefix %s, got %s", e.Path, e.Expected, e.Actual)
}

// VerifyFile checks that the SHA-256 of the file at path starts with prefix
// (hex, any case), the same test torch.hub's check_hash applies. As in
// torch.hub, an empty prefix skips hashing; the file must still be readable.
func VerifyFile(path, prefix string) error {
	f, _, err := limits.OpenRegular(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if prefix == "" {
		return nil
	}
	h := digest.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("hashing %s: %w", path, err)
	}
	actual := hex.EncodeToString(h.Sum(nil))
	if !strings.HasPrefix(actual, strings.ToLower(prefix)) {
		return &HashMismatchError{Path: path, Expected: strings.ToLower(prefix), Actual: actual}
	}
	return nil
}
