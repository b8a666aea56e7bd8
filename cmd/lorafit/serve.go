package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/lorafit/lorafit/serve"
	"github.com/lorafit/lorafit/weights"
)

// serveContext ends the server: the first SIGINT or SIGTERM drains it.
// Tests replace it.
var serveContext = func() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// serveListening, if set (tests), learns the address the server listens on.
var serveListening func(addr string)

func runServe(fs *flag.FlagSet, args []string, out io.Writer) error {
	var bf baseFlags
	bf.register(fs, "resnet50/IMAGENET1K_V2")
	dir := fs.String("adapters", "", "directory of adapter directories (as lorafit train --out and experiment write them), each served under its directory name")
	addr := fs.String("addr", "127.0.0.1:8080", "address to listen on (loopback by default; 0.0.0.0:8080 for every interface)")
	maxAdapters := fs.Int("max-adapters", 128, "adapters kept loaded; the least recently used is evicted")
	maxAdapterMiB := fs.Int("max-adapter-mib", 1024, "memory for loaded adapters' tensors, in MiB")
	maxBatch := fs.Int("max-batch", 64, "images per batch, across requests and adapters")
	batchWait := fs.Duration("batch-wait", 5*time.Millisecond, "longest wait for a batch to fill")
	maxQueue := fs.Int("max-queue", 128, "predict requests admitted at once; more get 503")
	maxBodyMiB := fs.Int("max-body-mib", 16, "largest request body, in MiB")
	maxImages := fs.Int("max-images", 64, "images per request")
	maxPixels := fs.Int64("max-image-pixels", 4096*4096, "width×height of one image, checked before decoding")
	readTimeout := fs.Duration("read-timeout", 30*time.Second, "time to read a whole request (slow clients are cut off)")
	writeTimeout := fs.Duration("write-timeout", 2*time.Minute, "time to answer a request")
	noMerge := fs.Bool("no-merge", false, "always apply LoRA per sample, even to a batch of one adapter alone (by default such a batch runs on that adapter's merged weights, at a merged model's speed)")
	warm := fs.Bool("warm", true, "compile the base's graphs for every batch size at start, in the background")
	drain := fs.Duration("drain", 30*time.Second, "on SIGINT/SIGTERM, how long requests in flight may take to finish")
	var size int
	registerImageSize(fs, &size, 0, "input side for the base's own classes (default: the weights' preset, else 224); adapters use their own")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *maxAdapters < 1 || *maxAdapterMiB < 1 || *maxQueue < 1 || *maxBodyMiB < 1 || *maxImages < 1 || *maxPixels < 1:
		return usageErrorf("--max-* flags must be positive")
	case *maxBatch < 1 || *maxBatch > 4096:
		return usageErrorf("--max-batch %d: want 1 to 4096", *maxBatch)
	case *batchWait < 0 || *readTimeout <= 0 || *writeTimeout <= 0 || *drain < 0:
		return usageErrorf("--batch-wait, --drain: want ≥ 0; timeouts: want > 0")
	}
	if setFlags(fs)["image-size"] {
		if err := checkImageSize(size); err != nil {
			return err
		}
	}
	ctx, stop := serveContext()
	defer stop()
	b, err := bf.newBackend()
	if err != nil {
		return err
	}
	base, merged, src, err := bf.load(ctx)
	if err != nil {
		return err
	}
	pre := src.Preprocess()
	if size > 0 {
		pre = pre.WithCrop(size)
	}
	var labels []string
	if base.Net.NumClasses() == 1000 {
		if w, err := weights.Lookup("resnet50/DEFAULT"); err == nil && len(w.Categories) == 1000 {
			labels = w.Categories
		}
	}
	wait := *batchWait
	if wait == 0 {
		wait = -1 // for serve.Options, 0 means the default
	}
	srv, err := serve.New(b, base, serve.Options{
		AdaptersDir: *dir, BaseAdapter: merged, BasePreprocess: pre, BaseLabels: labels, BaseSource: src.String(),
		MaxAdapters: *maxAdapters, MaxAdapterBytes: int64(*maxAdapterMiB) << 20, MaxBatch: *maxBatch,
		BatchWait: wait, MaxQueue: *maxQueue, MaxBodyBytes: int64(*maxBodyMiB) << 20, MaxImages: *maxImages,
		MaxImagePixels: *maxPixels, ReadTimeout: *readTimeout, WriteTimeout: *writeTimeout, NoMerge: *noMerge,
	})
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	names, _ := srv.Registry().Names()
	fmt.Fprintf(out, "lorafit serve: http://%s/ — base %s, %d adapters in %s\n", l.Addr(), base.Net.Describe(), len(names), *dir)
	if serveListening != nil {
		serveListening(l.Addr().String())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	if *warm {
		go func() {
			t0 := time.Now()
			if err := srv.Warm(ctx); err == nil {
				slog.Info("graphs compiled", "input", pre.Crop, "in", time.Since(t0).Round(time.Millisecond))
			}
		}()
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	stop() // a second signal now stops the process at once
	slog.Info("draining requests in flight", "up to", *drain)
	sctx, cancel := context.WithTimeout(context.Background(), *drain)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if err := <-errc; err != nil {
		return err
	}
	fmt.Fprintln(out, "lorafit serve: stopped")
	return nil
}
