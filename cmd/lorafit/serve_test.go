package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lorafit/lorafit/classifier"
	"github.com/lorafit/lorafit/data"
	"github.com/lorafit/lorafit/internal/testutil"
	"github.com/lorafit/lorafit/serve"
)

// digitFolder writes an ImageFolder of MNIST's first n training digits of
// each of the classes 0, 1 and 2, named zero, one and two.
func digitFolder(t *testing.T, dir string, n int) string {
	t.Helper()
	train, _, err := data.MNIST()
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"zero", "one", "two"}
	count := make([]int, 3)
	for i := 0; i < train.Len(); i++ {
		c := train.Label(i)
		if c > 2 || count[c] == n {
			continue
		}
		count[c]++
		img := &image.Gray{Pix: train.Image(i), Stride: train.W, Rect: image.Rect(0, 0, train.W, train.H)}
		var buf bytes.Buffer
		if err := png.Encode(&buf, img); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, names[c], fmt.Sprintf("%05d.png", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// startServe runs `lorafit serve ARGS --addr 127.0.0.1:0` in-process and
// returns its URL and a stop that sends it what SIGTERM would and returns
// its exit code and output.
func startServe(t *testing.T, args ...string) (url string, stop func() (int, string, string)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	serveContext = func() (context.Context, context.CancelFunc) { return ctx, cancel }
	addr := make(chan string, 1)
	serveListening = func(a string) { addr <- a }
	t.Cleanup(func() {
		serveContext = func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) }
		serveListening = nil
	})
	type result struct {
		code        int
		out, errout string
	}
	done := make(chan result, 1)
	go func() {
		var out, errb bytes.Buffer
		code := run(append([]string{"serve", "--addr", "127.0.0.1:0"}, args...), &out, &errb)
		done <- result{code, out.String(), errb.String()}
	}()
	select {
	case a := <-addr:
		url = "http://" + a
	case r := <-done:
		t.Fatalf("serve exited %d: %s", r.code, r.errout)
	case <-time.After(60 * time.Second):
		t.Fatal("serve did not start")
	}
	return url, func() (int, string, string) {
		cancel()
		r := <-done
		return r.code, r.out, r.errout
	}
}

func postImages(t *testing.T, url, adapterName string, paths []string) serve.PredictResponse {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("adapter", adapterName)
	mw.WriteField("top_k", "3")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		w, _ := mw.CreateFormFile("image", filepath.Base(p))
		w.Write(b)
	}
	mw.Close()
	resp, err := http.Post(url+"/v1/predict", mw.FormDataContentType(), &buf)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("predict %s: %d %s", adapterName, resp.StatusCode, raw)
	}
	var r serve.PredictResponse
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func httpDo(t *testing.T, method, url string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestServeMatchesPredict: `lorafit serve` on a PyTorch-saved base with two
// adapters trained by `lorafit train` (a LoRA with an MLP head on MNIST's
// ten digits; a replaced fc on an ImageFolder of three) answers each with
// the logits `lorafit predict --adapter` gives, lists, loads, unloads and
// counts them, and drains on SIGTERM.
func TestServeMatchesPredict(t *testing.T) {
	dir := t.TempDir()
	adapters := filepath.Join(dir, "adapters")
	if code, _, stderr := lorafit(t, "train", "--weights", fixture, "--case", "2", "--rank", "2", "--alpha", "4", "--head", "16,8",
		"--limit-train", "128", "--limit-test", "32", "--batch", "32", "--out", filepath.Join(adapters, "digits")); code != 0 {
		t.Fatalf("train digits: %s", stderr)
	}
	folder := digitFolder(t, filepath.Join(dir, "folder"), 12)
	if code, _, stderr := lorafit(t, "train", "--weights", fixture, "--case", "4", "--data", folder, "--batch", "16",
		"--out", filepath.Join(adapters, "three")); code != 0 {
		t.Fatalf("train three: %s", stderr)
	}
	var images []string
	for _, n := range []string{"mnist_test0_label7.png", "mnist_test1_label2.png", "mnist_test2_label1.png"} {
		images = append(images, filepath.Join("testdata", n))
	}
	predicted := map[string][]classifier.Prediction{}
	for _, name := range []string{"digits", "three"} {
		args := append([]string{"predict", "--weights", fixture, "--adapter", filepath.Join(adapters, name, "adapter"), "--json"}, images...)
		code, stdout, stderr := lorafit(t, args...)
		if code != 0 {
			t.Fatalf("predict %s: %s", name, stderr)
		}
		for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
			var p classifier.Prediction
			if err := json.Unmarshal([]byte(line), &p); err != nil {
				t.Fatal(err)
			}
			predicted[name] = append(predicted[name], p)
		}
	}

	url, stop := startServe(t, "--weights", fixture, "--adapters", adapters, "--image-size", "28", "--batch-wait", "2ms")
	for _, name := range []string{"digits", "three"} {
		r := postImages(t, url, name, images)
		if len(r.Predictions) != len(images) {
			t.Fatalf("%s: %d predictions", name, len(r.Predictions))
		}
		for i, p := range r.Predictions {
			want := predicted[name][i]
			testutil.AssertClose(t, fmt.Sprintf("%s %s", name, images[i]), p.Logits, want.Logits, 1e-5)
			if p.Top[0].Label != want.Top[0].Label {
				t.Errorf("%s %s: top %q, predict says %q", name, images[i], p.Top[0].Label, want.Top[0].Label)
			}
		}
	}
	if r := postImages(t, url, "three", images[:1]); r.Predictions[0].Top[0].Label != predicted["three"][0].Top[0].Label ||
		!strings.Contains("zero one two", r.Predictions[0].Top[0].Label) {
		t.Errorf("three's class names: %+v", r.Predictions[0].Top)
	}

	code, body := httpDo(t, "GET", url+"/v1/adapters")
	var list struct{ Adapters []serve.AdapterInfo }
	if err := json.Unmarshal([]byte(body), &list); code != 200 || err != nil || len(list.Adapters) != 3 {
		t.Fatalf("list: %d %s", code, body)
	}
	digits, three := list.Adapters[1], list.Adapters[2]
	if digits.Name != "digits" || digits.Classes.Count != 10 || !digits.Loaded || digits.ImageSize != 28 || digits.Metrics["accuracy"] == nil {
		t.Errorf("digits listed as %+v", digits)
	}
	if three.Name != "three" || three.Classes.Count != 3 || strings.Join(three.Classes.Names, ",") != "one,two,zero" && strings.Join(three.Classes.Names, ",") != "zero,one,two" {
		t.Errorf("three listed as %+v", three)
	}
	if code, body := httpDo(t, "PUT", url+"/v1/adapters/three"); code != 200 || !strings.Contains(body, `"version":2`) {
		t.Errorf("PUT: %d %s", code, body)
	}
	if code, body := httpDo(t, "DELETE", url+"/v1/adapters/digits"); code != 200 || !strings.Contains(body, `"was_loaded":true`) {
		t.Errorf("DELETE: %d %s", code, body)
	}
	_, metrics := httpDo(t, "GET", url+"/metrics")
	for _, line := range []string{`lorafit_serve_images_total{adapter="digits"} 3`, `lorafit_serve_images_total{adapter="three"} 4`,
		"lorafit_serve_adapters_loaded 1", "lorafit_serve_adapter_loads_total 3", "lorafit_serve_adapter_unloads_total 1"} {
		if !strings.Contains(metrics, line+"\n") {
			t.Errorf("metrics lack %q", line)
		}
	}
	code, stdout, stderr := stop()
	if code != 0 || !strings.Contains(stdout, "stopped") {
		t.Errorf("serve exited %d: %s %s", code, stdout, stderr)
	}
}

// TestServeFlags: bad flags are usage errors.
func TestServeFlags(t *testing.T) {
	for _, args := range [][]string{
		{"serve", "--max-batch", "0"},
		{"serve", "--batch-wait", "-1s"},
		{"serve", "--image-size", "0"},
	} {
		if code, _, stderr := lorafit(t, args...); code != 2 {
			t.Errorf("%v: exit %d (%s), want 2", args, code, stderr)
		}
	}
	if code, _, stderr := lorafit(t, "serve", "--weights", fixture, "--adapters", "/nonexistent/dir", "--addr", "127.0.0.1:0"); code != 1 || !strings.Contains(stderr, "/nonexistent/dir") {
		t.Errorf("missing adapters dir: exit %d: %s", code, stderr)
	}
}
