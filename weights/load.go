package weights

import (
	"context"
	"fmt"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/classifier"
	"github.com/lorafit/lorafit/preprocess"
	"github.com/lorafit/lorafit/resnet"
)

// Load resolves a --weights spec (see Open) into a base network ready to
// run. A merged model (as `lorafit merge` writes) also gives the adapter
// that holds its head; otherwise that is nil. opts.Arch, when set, must
// agree with what the file holds.
func Load(ctx context.Context, spec string, opts OpenOptions) (*backbone.Base, *adapter.Adapter, *Source, error) {
	sd, src, err := Open(ctx, spec, opts)
	if err != nil {
		return nil, nil, nil, err
	}
	rest, head, err := classifier.SplitMerged(sd)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", spec, err)
	}
	base, err := resnet.FromStateDict(rest, opts.Arch, spec, src.SHA256)
	if err != nil {
		return nil, nil, nil, err
	}
	if head == nil {
		return base, nil, src, nil
	}
	a, err := classifier.HeadAdapter(base.Net, head)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", spec, err)
	}
	return base, a, src, nil
}

// Preprocess is how inputs of these weights are preprocessed: the
// registry's preset, else ImageNet's evaluation preset at 224.
func (s *Source) Preprocess() preprocess.Preprocess {
	if w := s.Registry; w != nil {
		return w.Preprocess
	}
	return preprocess.ImageNet(224)
}
