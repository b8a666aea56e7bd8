package resnet

import (
	"math"
	"math/rand/v2"

	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/checkpoint"
)

// RandomStateDict returns a state_dict initialized the way torchvision's
// ResNet.__init__ does (kaiming-normal fan_out convs, unit batch norms,
// nn.Linear's default fc), from a seeded generator: `--weights random` gives
// offline pipelines a real, reproducible network, never a silent stand-in.
func RandomStateDict(c Config, seed uint64) *checkpoint.StateDict {
	rng := rand.New(rand.NewPCG(seed, 0x6c6f7261666974)) // "lorafit"
	sd := checkpoint.NewStateDict()
	fcIn := c.FeatureDim()
	for _, p := range c.Params() {
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
			sd.Set(p.Name, checkpoint.FromInt64(p.Shape, []int64{0}))
			continue
		}
		sd.Set(p.Name, checkpoint.FromFloat32(p.Shape, vals))
	}
	return sd
}
