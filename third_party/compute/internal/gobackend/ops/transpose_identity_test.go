// Patch (lorafit): an identity transpose is its operand.

package ops_test

import (
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
)

// TestTransposeIdentity: transposing by the identity permutation builds no
// op (no copy at run time); any other permutation still does.
func TestTransposeIdentity(t *testing.T) {
	fn := backend.Builder("test_transpose_identity").Main()
	x, err := fn.Parameter("x", shapes.Make(dtypes.Float32, 2, 3, 4), nil)
	if err != nil {
		t.Fatal(err)
	}
	same, err := fn.Transpose(x, 0, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if same != x {
		t.Errorf("identity transpose built a new op")
	}
	moved, err := fn.Transpose(x, 0, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	if moved == x {
		t.Errorf("transpose (0, 2, 1) returned its operand")
	}
}
