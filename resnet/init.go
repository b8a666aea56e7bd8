package resnet

import (
	"math"
	"math/rand/v2"
	"runtime"
	"sync"

	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/checkpoint"
)

// RandomStateDict returns a state_dict initialized the way torchvision's
// ResNet.__init__ does (kaiming-normal fan_out convs, unit batch norms,
// nn.Linear's default fc), from a seeded generator: `--weights random` gives
// offline pipelines a real, reproducible network, never a silent stand-in.
// Each tensor draws from its own stream (the seed and its index), so the
// tensors fill on all cores and still come out the same: 25 million draws
// were most of a ResNet-50's start-up on one.
func RandomStateDict(c Config, seed uint64) *checkpoint.StateDict {
	fcIn := c.FeatureDim()
	params := c.Params()
	tensors := make([]*checkpoint.Tensor, len(params))
	var wg sync.WaitGroup
	next := make(chan int)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := range next {
				tensors[i] = randomTensor(params[i], fcIn, rand.New(rand.NewPCG(seed, 0x6c6f7261666974+uint64(i)))) // "lorafit"
			}
		})
	}
	for i := range params {
		next <- i
	}
	close(next)
	wg.Wait()
	sd := checkpoint.NewStateDict()
	for i, p := range params {
		sd.Set(p.Name, tensors[i])
	}
	return sd
}

// randomTensor initializes one parameter as RandomStateDict says.
func randomTensor(p backbone.Param, fcIn int, rng *rand.Rand) *checkpoint.Tensor {
	vals := make([]float32, p.NumElements())
	switch p.Kind {
	case backbone.ConvWeight:
		// fan_out = out_channels × kernel area, groups or not (torch's
		// _calculate_fan_in_and_fan_out).
		std := math.Sqrt(2 / float64(p.Shape[0]*p.Shape[2]*p.Shape[3]))
		for i := range vals {
			vals[i] = float32(rng.NormFloat64() * std)
		}
	case backbone.LinearWeight, backbone.LinearBias:
		bound := 1 / math.Sqrt(float64(fcIn))
		for i := range vals {
			vals[i] = float32((2*rng.Float64() - 1) * bound)
		}
	case backbone.BNWeight, backbone.BNVar:
		for i := range vals {
			vals[i] = 1
		}
	case backbone.BNCount:
		return checkpoint.FromInt64(p.Shape, []int64{0})
	}
	return checkpoint.FromFloat32(p.Shape, vals)
}
