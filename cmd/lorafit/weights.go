package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/lorafit/lorafit/weights"
)

func runWeights(fs *flag.FlagSet, args []string, out io.Writer) error {
	dir := fs.String("dir", "", "cache directory (default $LORAFIT_CACHE, else the user cache dir + /lorafit/weights)")
	rest, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(rest) == 0 {
		return usageErrorf("want a sub-command: list or download")
	}
	if *dir == "" {
		if *dir, err = weights.CacheDir(); err != nil {
			return err
		}
	}
	switch rest[0] {
	case "list":
		fmt.Fprintf(out, "%-24s %12s %7s %7s  %s\n", "NAME", "PARAMS", "ACC@1", "ACC@5", "CACHED")
		for _, w := range weights.All() {
			cached := "no"
			if p, _, err := w.Locate(*dir); err == nil {
				cached = p
			}
			fmt.Fprintf(out, "%-24s %12s %7.3f %7.3f  %s\n", w.Name, commas(w.NumParams), w.Acc1, w.Acc5, cached)
		}
		fmt.Fprintf(out, "\n(from torchvision %s; any name also works as ARCH/DEFAULT or as torchvision spells it, e.g. ResNet50_Weights.IMAGENET1K_V2)\n", weights.TorchvisionVersion())
		return nil
	case "download":
		if len(rest) != 2 {
			return usageErrorf("download takes exactly one NAME")
		}
		w, err := weights.Lookup(rest[1])
		if err != nil {
			return err
		}
		ctx, stop := signalContext()
		defer stop()
		path, err := weights.Download(ctx, w, *dir, weights.DownloadOptions{Progress: errOut})
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s: %s (sha256 %s… verified)\n", w.Name, path, w.SHA256Prefix)
		return nil
	}
	return usageErrorf("unknown sub-command %q: want list or download", rest[0])
}
