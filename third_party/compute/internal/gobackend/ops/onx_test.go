package ops_test

import (
	"testing"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/internal/gobackend"
	"github.com/gomlx/compute/shapes"
)

// compileOnX compiles the graph op builds on one parameter x of shape: the
// tests below check their outputs bit for bit (NaNs, signed zeros, bools'
// bytes), which the package's other helpers (testutil.IsEqual) do not.
func compileOnX(t *testing.T, name string, shape shapes.Shape, op func(f *gobackend.Function, x compute.Value) (compute.Value, error)) compute.Executable {
	t.Helper()
	builder := backend.Builder(name).(*gobackend.Builder)
	f := builder.Main().(*gobackend.Function)
	x, err := f.Parameter("x", shape, nil)
	if err != nil {
		t.Fatal(err)
	}
	y, err := op(f, x)
	if err != nil {
		t.Fatalf("%s: %+v", name, err)
	}
	if err := f.Return([]compute.Value{y}, nil); err != nil {
		t.Fatal(err)
	}
	exec, err := builder.Compile()
	if err != nil {
		t.Fatalf("%s: %+v", name, err)
	}
	return exec
}

// runOnX executes exec of compileOnX on x and returns its output's values.
func runOnX[T any](t *testing.T, exec compute.Executable, shape shapes.Shape, x any) []T {
	t.Helper()
	outs, err := exec.Execute([]compute.Buffer{makeBuffer(t, shape, x)}, nil, 0)
	if err != nil {
		t.Fatalf("%+v", err)
	}
	return outs[0].(*gobackend.Buffer).Flat.([]T)
}
