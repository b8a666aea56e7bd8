package serve

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomlx/gomlx/core/tensors"
	"github.com/gomlx/gomlx/support/exceptions"
	pkgerrors "github.com/pkg/errors"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/classifier"
	"github.com/lorafit/lorafit/internal/testutil"
	"github.com/lorafit/lorafit/limits"
	"github.com/lorafit/lorafit/preprocess"
)

var digits = []string{"mnist_test0_label7.png", "mnist_test1_label2.png", "mnist_test2_label1.png"}

func digit(t testing.TB, i int) []byte {
	t.Helper()
	b, err := os.ReadFile(testutil.Path("cmd/lorafit/testdata/" + digits[i]))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// adapterDir fills a directory with copies of the committed adapters
// (bound to the fixture base) under the given names.
func adapterDir(t testing.TB, names map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, src := range names {
		if err := os.CopyFS(filepath.Join(dir, name), os.DirFS(testutil.Path("lora/testdata/"+src))); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

type testServer struct {
	*Server
	url  string
	base *backbone.Base
	dir  string
}

// startServer serves the fixture base on a loopback port until the test
// ends; opts.AdaptersDir defaults to the three committed adapters.
func startServer(t testing.TB, opts Options) *testServer {
	t.Helper()
	base := loadFixtureBase(t)
	if opts.AdaptersDir == "" {
		opts.AdaptersDir = adapterDir(t, map[string]string{"case2": "case2_like", "case4": "case4_like", "strided": "strided_rslora"})
	}
	if opts.BasePreprocess.Crop == 0 {
		opts.BasePreprocess = preprocess.Native(28)
	}
	if opts.Logger == nil {
		opts.Logger = discardLogger()
	}
	s, err := New(testutil.Backend(), base, opts)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		<-done
	})
	return &testServer{Server: s, url: "http://" + l.Addr().String(), base: base, dir: opts.AdaptersDir}
}

var client = &http.Client{Timeout: 30 * time.Second}

// multipartBody is a predict form: the adapter, top_k, and image files.
func multipartBody(t testing.TB, adapterName, topK string, images ...[]byte) (string, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if adapterName != "" {
		mw.WriteField("adapter", adapterName)
	}
	if topK != "" {
		mw.WriteField("top_k", topK)
	}
	for i, img := range images {
		w, _ := mw.CreateFormFile("image", fmt.Sprintf("img%d.png", i))
		w.Write(img)
	}
	mw.Close()
	return mw.FormDataContentType(), &buf
}

// do sends a request and decodes a JSON reply into v (if not nil).
func do(t testing.TB, method, url, contentType string, body io.Reader, v any) int {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.Header.Get("Content-Type") == "application/json" {
		var e struct{ Error *string }
		if json.Unmarshal(raw, &e) == nil && resp.StatusCode >= 400 && e.Error == nil {
			t.Errorf("%s %s: %d without an error message: %s", method, url, resp.StatusCode, raw)
		}
	} else if resp.StatusCode >= 400 {
		t.Errorf("%s %s: %d error not in JSON: %s", method, url, resp.StatusCode, raw)
	}
	if v != nil && resp.StatusCode < 400 {
		if err := json.Unmarshal(raw, v); err != nil {
			t.Fatalf("%s %s: %v in %s", method, url, err, raw)
		}
	}
	if v, ok := v.(*errorReply); ok {
		json.Unmarshal(raw, v)
	}
	return resp.StatusCode
}

type errorReply struct{ Error string }

func predictForm(t testing.TB, s *testServer, adapterName string, images ...[]byte) (PredictResponse, int) {
	t.Helper()
	ct, body := multipartBody(t, adapterName, "3", images...)
	var resp PredictResponse
	code := do(t, "POST", s.url+"/v1/predict", ct, body, &resp)
	return resp, code
}

// want is classifier.Predictor's logits for one PNG with an adapter.
func want(t testing.TB, base *backbone.Base, a *adapter.Adapter, pre preprocess.Preprocess, png []byte) []float32 {
	t.Helper()
	img, err := limits.DecodeImageBytes(png, "png")
	if err != nil {
		t.Fatal(err)
	}
	p := classifier.NewPredictor(testutil.Backend(), base, a)
	out, err := p.Logits(tensors.FromFlatDataAndDimensions(pre.Apply(img), 1, 3, pre.Crop, pre.Crop))
	if err != nil {
		t.Fatal(err)
	}
	defer out.FinalizeAll()
	return tensors.MustCopyFlatData[float32](out)
}

// TestServeAPI: the list, predict (form and JSON, each adapter and the
// base, logits equal to classifier.Predictor's), reload, unload, health
// and metrics routes.
func TestServeAPI(t *testing.T) {
	s := startServer(t, Options{})
	var list struct {
		Base     map[string]any
		Adapters []AdapterInfo
	}
	if code := do(t, "GET", s.url+"/v1/adapters", "", nil, &list); code != 200 {
		t.Fatalf("list: %d", code)
	}
	if len(list.Adapters) != 4 || list.Adapters[0].Name != "base" || list.Adapters[1].Name != "case2" {
		t.Fatalf("list: %+v", list.Adapters)
	}
	c4 := list.Adapters[2]
	if c4.Name != "case4" || c4.Loaded || c4.Classes.Count != 7 || c4.Classes.Names[1] != "one" || c4.ImageSize != 28 ||
		c4.BaseSHA256 != s.base.SHA256 || !c4.BaseOK || c4.Bytes < 5000 {
		t.Errorf("case4 listed as %+v", c4)
	}

	pngs := [][]byte{digit(t, 0), digit(t, 1), digit(t, 2)}
	for _, name := range []string{"case2", "case4", "strided", "base"} {
		resp, code := predictForm(t, s, name, pngs...)
		if code != 200 {
			t.Fatalf("predict %s: %d", name, code)
		}
		var a *adapter.Adapter
		pre := preprocess.Native(28)
		if name != "base" {
			a = loadAdapter(t, s.base, filepath.Join(s.dir, name))
			pre = a.Info.Preprocess
		}
		if resp.Adapter != name || len(resp.Predictions) != 3 {
			t.Fatalf("predict %s: %+v", name, resp)
		}
		for i, p := range resp.Predictions {
			testutil.AssertClose(t, fmt.Sprintf("%s image %d", name, i), p.Logits, want(t, s.base, a, pre, pngs[i]), 1e-5)
			if len(p.Top) != 3 || p.Top[0].Prob < p.Top[1].Prob || p.Image != fmt.Sprintf("img%d.png", i) {
				t.Errorf("%s image %d: top %+v", name, i, p)
			}
		}
		for _, k := range []string{"total", "inference", "queue", "decode"} {
			if _, ok := resp.Timing[k]; !ok {
				t.Errorf("timing_ms lacks %s: %v", k, resp.Timing)
			}
		}
	}
	// JSON with base64, and the class names of the adapter.
	body, _ := json.Marshal(map[string]any{"adapter": "case4", "images": []string{base64.StdEncoding.EncodeToString(pngs[0])}, "top_k": 7})
	var resp PredictResponse
	if code := do(t, "POST", s.url+"/v1/predict", "application/json", bytes.NewReader(body), &resp); code != 200 {
		t.Fatalf("JSON predict: %d", code)
	}
	if len(resp.Predictions[0].Top) != 7 || len(resp.Predictions[0].Logits) != 7 || resp.Predictions[0].Top[0].Label == "" {
		t.Errorf("JSON predict: %+v", resp)
	}
	// No adapter named: the base.
	ct, buf := multipartBody(t, "", "", pngs[0])
	if code := do(t, "POST", s.url+"/v1/predict", ct, buf, &resp); code != 200 || resp.Adapter != "base" || len(resp.Predictions[0].Top) != 5 {
		t.Errorf("no adapter: %d %+v", code, resp)
	}

	if code := do(t, "GET", s.url+"/v1/adapters", "", nil, &list); code != 200 || !list.Adapters[1].Loaded || list.Adapters[1].Version != 1 {
		t.Errorf("after use: %d %+v", code, list.Adapters[1])
	}
	var ai AdapterInfo
	if code := do(t, "PUT", s.url+"/v1/adapters/case2", "", nil, &ai); code != 200 || !ai.Loaded || ai.Version != 2 {
		t.Errorf("PUT: %d %+v", code, ai)
	}
	var del map[string]any
	if code := do(t, "DELETE", s.url+"/v1/adapters/case2", "", nil, &del); code != 200 || del["was_loaded"] != true {
		t.Errorf("DELETE: %d %v", code, del)
	}
	if code := do(t, "DELETE", s.url+"/v1/adapters/case2", "", nil, &del); code != 200 || del["was_loaded"] != false {
		t.Errorf("DELETE again: %d %v", code, del)
	}
	if code := do(t, "GET", s.url+"/v1/adapters/case2", "", nil, &ai); code != 200 || ai.Loaded {
		t.Errorf("GET one: %d %+v", code, ai)
	}
	var health map[string]any
	if code := do(t, "GET", s.url+"/healthz", "", nil, &health); code != 200 || health["status"] != "ok" {
		t.Errorf("healthz: %d %v", code, health)
	}
	metrics := get(t, s.url+"/metrics")
	for _, line := range []string{
		`lorafit_serve_predict_requests_total{adapter="case4",code="200"} 2`,
		`lorafit_serve_images_total{adapter="case2"} 3`,
		`lorafit_serve_request_duration_seconds_count{adapter="strided"} 1`,
		`lorafit_serve_request_duration_seconds_bucket{adapter="base",le="+Inf"} 2`,
		`lorafit_serve_adapters_loaded 2`,
		`lorafit_serve_adapter_loads_total 4`,
		`lorafit_serve_adapter_cache_misses_total 3`,
		`lorafit_serve_adapter_unloads_total 1`,
		`lorafit_serve_adapter_evictions_total 0`,
		"# TYPE lorafit_serve_batch_size histogram",
		`lorafit_serve_http_requests_total{route="/v1/predict",code="200"} 6`,
	} {
		if !strings.Contains(metrics, line+"\n") {
			t.Errorf("metrics lack %q", line)
		}
	}
	if !strings.Contains(metrics, "lorafit_serve_adapter_cache_hits_total 1\n") {
		t.Errorf("metrics: want 1 cache hit (the JSON request for case4):\n%s", grep(metrics, "cache"))
	}
}

func get(t testing.TB, url string) string {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestServeLRU: with room for two adapters, using three in turn evicts
// the least recently used, reloads it on its next use, and every answer
// stays right.
func TestServeLRU(t *testing.T) {
	s := startServer(t, Options{MaxAdapters: 2})
	png := digit(t, 0)
	wants := map[string][]float32{}
	for _, n := range []string{"case2", "case4", "strided"} {
		a := loadAdapter(t, s.base, filepath.Join(s.dir, n))
		wants[n] = want(t, s.base, a, a.Info.Preprocess, png)
	}
	loaded := func() string {
		var names []string
		for _, n := range []string{"case2", "case4", "strided"} {
			if _, ok := s.Registry().Loaded()[n]; ok {
				names = append(names, n)
			}
		}
		return strings.Join(names, ",")
	}
	for i, step := range []struct{ use, loaded string }{
		{"case2", "case2"},
		{"case4", "case2,case4"},
		{"strided", "case4,strided"}, // case2 evicted
		{"case4", "case4,strided"},   // a hit: case4 is now the most recent
		{"case2", "case2,case4"},     // strided evicted, case2 reloaded
		{"strided", "case2,strided"}, // case4 evicted
	} {
		resp, code := predictForm(t, s, step.use, png)
		if code != 200 {
			t.Fatalf("step %d (%s): %d", i, step.use, code)
		}
		testutil.AssertClose(t, fmt.Sprintf("step %d (%s)", i, step.use), resp.Predictions[0].Logits, wants[step.use], 1e-5)
		if got := loaded(); got != step.loaded {
			t.Errorf("step %d: loaded %s, want %s", i, got, step.loaded)
		}
	}
	m := get(t, s.url+"/metrics")
	for _, line := range []string{"lorafit_serve_adapter_evictions_total 3", "lorafit_serve_adapter_loads_total 5", "lorafit_serve_adapter_cache_hits_total 1", "lorafit_serve_adapters_loaded 2"} {
		if !strings.Contains(m, line+"\n") {
			t.Errorf("metrics lack %q:\n%s", line, grep(m, "adapter"))
		}
	}
}

// TestServeMemoryBound: the bytes bound evicts too.
func TestServeMemoryBound(t *testing.T) {
	s := startServer(t, Options{MaxAdapterBytes: 1})
	png := digit(t, 0)
	for _, n := range []string{"case2", "case4", "case2"} {
		if _, code := predictForm(t, s, n, png); code != 200 {
			t.Fatalf("%s: %d", n, code)
		}
		if l := s.Registry().Loaded(); len(l) != 1 {
			t.Errorf("after %s: loaded %v, want only the adapter just used", n, l)
		}
	}
}

// TestServeReload: a changed adapter directory takes effect without a
// restart; a request in flight finishes with the version it started with.
func TestServeReload(t *testing.T) {
	s := startServer(t, Options{CheckEvery: -1}) // check on every use
	png := digit(t, 1)
	if r, code := predictForm(t, s, "case2", png); code != 200 || len(r.Predictions[0].Logits) != 10 {
		t.Fatalf("before: %d", code)
	}
	// Hold the next batch, send a request for case2, then replace case2's
	// directory with case4 (7 classes), as saving an adapter does.
	release := make(chan struct{})
	entered := make(chan struct{}, 4)
	var once sync.Once
	s.batcher.gate = func() {
		entered <- struct{}{}
		once.Do(func() { <-release })
	}
	done := make(chan PredictResponse)
	go func() {
		r, code := predictForm(t, s, "case2", png)
		if code != 200 {
			t.Errorf("in flight: %d", code)
		}
		done <- r
	}()
	<-entered
	dir := filepath.Join(s.dir, "case2")
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(dir, os.DirFS(testutil.Path("lora/testdata/case4_like"))); err != nil {
		t.Fatal(err)
	}
	after := make(chan PredictResponse)
	go func() {
		r, code := predictForm(t, s, "case2", png)
		if code != 200 {
			t.Errorf("after the change: %d", code)
		}
		after <- r
	}()
	time.Sleep(50 * time.Millisecond) // the second request loads the new version, then queues
	close(release)
	if r := <-done; len(r.Predictions[0].Logits) != 10 || r.Version != 1 {
		t.Errorf("the request in flight got %d logits (version %d), want the old version's 10 (version 1)", len(r.Predictions[0].Logits), r.Version)
	}
	if r := <-after; len(r.Predictions[0].Logits) != 7 || r.Version != 2 {
		t.Errorf("after the change: %d logits (version %d), want the new version's 7 (version 2)", len(r.Predictions[0].Logits), r.Version)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestServeRemovedAdapter: an adapter whose directory is removed is gone
// (404) and unloaded.
func TestServeRemovedAdapter(t *testing.T) {
	s := startServer(t, Options{})
	png := digit(t, 0)
	if _, code := predictForm(t, s, "case4", png); code != 200 {
		t.Fatalf("before: %d", code)
	}
	if err := os.RemoveAll(filepath.Join(s.dir, "case4")); err != nil {
		t.Fatal(err)
	}
	if _, code := predictForm(t, s, "case4", png); code != 404 {
		t.Errorf("after removal: %d, want 404", code)
	}
	if _, ok := s.Registry().Loaded()["case4"]; ok {
		t.Error("a removed adapter stays loaded")
	}
}

// TestFailLogsStack: a runtime panic inside an execution reaches the client
// as a 500 with its message, and the log with the panicking frames; an
// error without a stack logs none.
func TestFailLogsStack(t *testing.T) {
	var nilMap map[string][]int
	panicked := exceptions.TryCatch[error](func() { nilMap["x"][0]++ }) // what GoMLX's executor recovers
	if panicked == nil {
		t.Fatal("no panic")
	}
	for _, c := range []struct {
		err   error
		stack bool
	}{
		{fmt.Errorf("a1: %w", pkgerrors.WithMessage(panicked, `failed to execute graph "serve-tail-a1#1"`)), true},
		{errors.New("plain"), false},
	} {
		var log bytes.Buffer
		s := &Server{log: slog.New(slog.NewTextHandler(&log, nil))}
		rec := httptest.NewRecorder()
		code := s.fail(rec, c.err)
		var body struct{ Error string }
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || code != http.StatusInternalServerError || body.Error != c.err.Error() {
			t.Errorf("%v: %d %s", c.err, code, rec.Body)
		}
		if got := strings.Contains(log.String(), "TestFailLogsStack.func1"); got != c.stack {
			t.Errorf("%v: log has the panicking frame: %v, want %v\n%s", c.err, got, c.stack, log.String())
		}
		if strings.Contains(rec.Body.String(), "TestFailLogsStack") {
			t.Errorf("%v: the response carries the stack: %s", c.err, rec.Body)
		}
	}
}
