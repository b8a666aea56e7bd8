package serve

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lorafit/lorafit/internal/memcheck"
	"github.com/lorafit/lorafit/internal/testutil"
)

func hostileImage(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(testutil.Path("internal/hostile/testdata/images/" + name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestServeHostile: every hostile input gets its 4xx with a JSON error,
// none allocates for pixels that are not there, and the server keeps
// serving.
func TestServeHostile(t *testing.T) {
	dir := adapterDir(t, map[string]string{"case2": "case2_like", "other-base": "case2_like"})
	info := filepath.Join(dir, "other-base", "lorafit.json")
	raw, _ := os.ReadFile(info)
	os.WriteFile(info, bytes.Replace(raw, []byte("67f987c6d0a3"), []byte("000000000000"), 1), 0o644)
	s := startServer(t, Options{AdaptersDir: dir, MaxBodyBytes: 256 << 10, MaxImages: 4,
		ReadTimeout: 500 * time.Millisecond, ReadHeaderTimeout: 500 * time.Millisecond})
	png := digit(t, 0)
	ok := func(step string) {
		t.Helper()
		if _, code := predictForm(t, s, "case2", png); code != 200 {
			t.Fatalf("after %s: a good request got %d", step, code)
		}
	}
	ok("start")
	form := func(adapterName, topK string, images ...[]byte) (string, io.Reader) {
		ct, b := multipartBody(t, adapterName, topK, images...)
		return ct, b
	}
	jsonBody := func(v any) (string, io.Reader) {
		b, _ := json.Marshal(v)
		return "application/json", bytes.NewReader(b)
	}
	raw2 := func(ct, body string) (string, io.Reader) { return ct, strings.NewReader(body) }
	type req struct {
		name, method, path string
		body               func() (string, io.Reader)
		code               int
		msg                string // in the error
	}
	predict := func(name string, code int, msg string, body func() (string, io.Reader)) req {
		return req{name, "POST", "/v1/predict", body, code, msg}
	}
	for _, c := range []req{
		predict("100000×100000 PNG header", 413, "10000000000 pixels in one image is over the limit", func() (string, io.Reader) {
			return form("case2", "", hostileImage(t, "100000x100000.png"))
		}),
		predict("65535×65535 JPEG header", 413, "over the limit", func() (string, io.Reader) { return form("case2", "", hostileImage(t, "65535x65535.jpg")) }),
		predict("6000×6000 PNG in 49 bytes", 400, "more than a 49-byte png file can hold", func() (string, io.Reader) {
			return form("case2", "", hostileImage(t, "6000x6000_in_49_bytes.png"))
		}),
		predict("over the server's pixel limit", 413, "over this server's limit", func() (string, io.Reader) {
			return form("case2", "", bigPNG())
		}),
		predict("text as an image", 400, "not a readable PNG or JPEG", func() (string, io.Reader) { return form("case2", "", hostileImage(t, "text.png")) }),
		predict("truncated PNG", 400, "not a readable PNG or JPEG", func() (string, io.Reader) { return form("case2", "", hostileImage(t, "truncated.png")) }),
		predict("body over the limit", 413, "too large", func() (string, io.Reader) { return form("case2", "", make([]byte, 300<<10)) }),
		predict("too many images", 400, "more than 4 images", func() (string, io.Reader) { return form("case2", "", png, png, png, png, png) }),
		predict("no image", 400, "no image", func() (string, io.Reader) { return form("case2", "3") }),
		predict("unknown adapter", 404, "no such adapter", func() (string, io.Reader) { return form("nope", "", png) }),
		predict("traversal in the form", 404, "no such adapter", func() (string, io.Reader) { return form("../case2", "", png) }),
		predict("traversal in JSON", 404, "no such adapter", func() (string, io.Reader) {
			return jsonBody(map[string]any{"adapter": "../../etc", "images": []string{"aGk="}})
		}),
		predict("absolute path", 404, "no such adapter", func() (string, io.Reader) { return form(s.dir+"/case2", "", png) }),
		predict("hidden name", 404, "no such adapter", func() (string, io.Reader) { return form(".case2", "", png) }),
		predict("adapter on another base", 409, "trained on base weights", func() (string, io.Reader) { return form("other-base", "", png) }),
		predict("top_k zero", 400, "top_k", func() (string, io.Reader) { return form("case2", "0", png) }),
		predict("top_k not a number", 400, "top_k", func() (string, io.Reader) { return form("case2", "five", png) }),
		predict("top_k huge", 400, "top_k", func() (string, io.Reader) {
			return jsonBody(map[string]any{"images": []string{"aGk="}, "top_k": 1 << 40})
		}),
		predict("multipart without boundary", 400, "boundary", func() (string, io.Reader) { return raw2("multipart/form-data", "--x\r\n") }),
		predict("truncated multipart", 400, "malformed multipart", func() (string, io.Reader) {
			ct, b := multipartBody(t, "case2", "", png)
			return ct, bytes.NewReader(b.Bytes()[:b.Len()/2])
		}),
		predict("multipart garbage", 400, "no image", func() (string, io.Reader) { return raw2("multipart/form-data; boundary=zz", "not multipart at all") }),
		predict("malformed JSON", 400, "malformed JSON", func() (string, io.Reader) { return raw2("application/json", `{"adapter": "case2", "images": [`) }),
		predict("JSON of the wrong type", 400, "malformed JSON", func() (string, io.Reader) { return raw2("application/json", `{"images": "x"}`) }),
		predict("JSON with an unknown field", 400, "unknown field", func() (string, io.Reader) { return raw2("application/json", `{"image": []}`) }),
		predict("two JSON values", 400, "more than one value", func() (string, io.Reader) { return raw2("application/json", `{"images": ["aGk="]} {}`) }),
		predict("bad base64", 400, "not base64", func() (string, io.Reader) { return jsonBody(map[string]any{"images": []string{"!!not base64!!"}}) }),
		predict("base64 of garbage", 400, "not a readable PNG or JPEG", func() (string, io.Reader) { return jsonBody(map[string]any{"images": []string{"aGVsbG8gd29ybGQ="}}) }),
		predict("JSON body over the limit", 413, "too large", func() (string, io.Reader) {
			return raw2("application/json", `{"images": ["`+strings.Repeat("A", 300<<10)+`"]}`)
		}),
		predict("no content type", 415, "Content-Type", func() (string, io.Reader) { return raw2("", "x") }),
		predict("text/plain", 415, "Content-Type", func() (string, io.Reader) { return raw2("text/plain", "x") }),
		{"GET on predict", "GET", "/v1/predict", nil, 405, "allowed: POST"},
		{"unknown route", "GET", "/v2/anything", nil, 404, "no route"},
		{"traversal in the path", "PUT", "/v1/adapters/../case2", nil, 404, "no such adapter"},
		{"escaped traversal", "PUT", "/v1/adapters/..%2Fcase2", nil, 404, "no such adapter"},
		{"escaped traversal, DELETE", "DELETE", "/v1/adapters/..%2F..%2Fetc", nil, 404, "no such adapter"},
		{"nested name", "GET", "/v1/adapters/case2/adapter", nil, 404, "no such adapter"},
		{"unknown adapter PUT", "PUT", "/v1/adapters/nope", nil, 404, "no such adapter"},
		{"reload the base", "PUT", "/v1/adapters/base", nil, 400, "base model"},
		{"PUT on another base", "PUT", "/v1/adapters/other-base", nil, 409, "trained on base weights"},
		{"POST on the list", "POST", "/v1/adapters", nil, 405, "allowed: GET"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var ct string
			var body io.Reader
			if c.body != nil {
				ct, body = c.body()
			}
			var e errorReply
			memcheck.Bound(t, 0, 0, 64<<20, func() {
				code := do(t, c.method, s.url+c.path, ct, body, &e)
				if code != c.code || !strings.Contains(e.Error, c.msg) {
					t.Errorf("%d %q, want %d with …%s", code, e.Error, c.code, c.msg)
				}
			})
		})
		ok(c.name)
	}

	t.Run("slow client", func(t *testing.T) {
		// Headers, then a body that never comes: cut off at ReadTimeout.
		conn, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"images\": [")
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		t0 := time.Now()
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			t.Logf("slow client: %d %s", resp.StatusCode, b)
			if resp.StatusCode != http.StatusRequestTimeout {
				t.Errorf("slow client got %d %s, want 408", resp.StatusCode, b)
			}
		}
		if d := time.Since(t0); d > 3*time.Second {
			t.Errorf("slow client held for %v", d)
		}
	})
	ok("slow client")
	t.Run("slow headers", func(t *testing.T) {
		conn, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /v1/predict HTTP/1.1\r\nHost: x\r\n")
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		t0 := time.Now()
		io.ReadAll(conn) // the server closes the connection
		if d := time.Since(t0); d > 3*time.Second {
			t.Errorf("slow headers held for %v", d)
		}
	})
	ok("slow headers")
}

// bigPNG is the header of a 5000×4000 gray PNG with enough bytes after it
// that such an image could fit in them: within limits' bounds (40 MP,
// what the size can encode) but over the server's 16 MP.
func bigPNG() []byte {
	b := []byte("\x89PNG\r\n\x1a\n")
	ihdr := binary.BigEndian.AppendUint32(nil, 5000)
	ihdr = binary.BigEndian.AppendUint32(ihdr, 4000)
	ihdr = append(ihdr, 8, 0, 0, 0, 0) // 8-bit gray
	b = binary.BigEndian.AppendUint32(b, uint32(len(ihdr)))
	chunk := append([]byte("IHDR"), ihdr...)
	b = append(b, chunk...)
	b = binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(chunk))
	return append(b, make([]byte, 4000)...)
}

// TestServeQueueFull: with room for one request, a second one while the
// first waits gets 503 at once; the first still completes.
func TestServeQueueFull(t *testing.T) {
	s := startServer(t, Options{MaxQueue: 1})
	release := make(chan struct{})
	entered := make(chan struct{}, 8)
	var once sync.Once
	s.batcher.gate = func() {
		entered <- struct{}{}
		once.Do(func() { <-release })
	}
	png := digit(t, 0)
	first := make(chan int)
	go func() {
		_, code := predictForm(t, s, "case2", png)
		first <- code
	}()
	<-entered
	var e errorReply
	ct, body := multipartBody(t, "case2", "", png)
	if code := do(t, "POST", s.url+"/v1/predict", ct, body, &e); code != 503 || !strings.Contains(e.Error, "overloaded") {
		t.Errorf("second request: %d %q, want 503", code, e.Error)
	}
	close(release)
	if code := <-first; code != 200 {
		t.Errorf("first request: %d", code)
	}
	if _, code := predictForm(t, s, "case2", png); code != 200 {
		t.Errorf("after: %d", code)
	}
	if m := get(t, s.url+"/metrics"); !strings.Contains(m, "lorafit_serve_rejected_total 1\n") {
		t.Errorf("metrics: %s", grep(m, "rejected"))
	}
}

// TestServeShutdownDrains: Shutdown waits for a request in flight, which
// completes; new connections are refused meanwhile.
func TestServeShutdownDrains(t *testing.T) {
	base := loadFixtureBase(t)
	s, err := New(testutil.Backend(), base, Options{AdaptersDir: adapterDir(t, map[string]string{"case2": "case2_like"}), Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	ts := &testServer{Server: s, url: "http://" + l.Addr().String(), base: base}
	release := make(chan struct{})
	entered := make(chan struct{}, 2)
	s.batcher.gate = func() {
		entered <- struct{}{}
		<-release
	}
	png := digit(t, 0)
	inflight := make(chan int)
	go func() {
		_, code := predictForm(t, ts, "case2", png)
		inflight <- code
	}()
	<-entered
	stopped := make(chan error)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stopped <- s.Shutdown(ctx)
	}()
	time.Sleep(100 * time.Millisecond)
	select {
	case err := <-stopped:
		t.Fatalf("Shutdown returned (%v) with a request in flight", err)
	default:
	}
	if c, err := net.DialTimeout("tcp", l.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("a new connection was accepted during shutdown")
	}
	close(release)
	if code := <-inflight; code != 200 {
		t.Errorf("request in flight: %d, want 200", code)
	}
	if err := <-stopped; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

// TestServeWebPage: the page is served and needs nothing from outside.
func TestServeWebPage(t *testing.T) {
	s := startServer(t, Options{})
	page := get(t, s.url+"/")
	for _, want := range []string{`id="adapter"`, `id="file"`, `id="results"`, `id="latency"`, "/v1/predict", "/v1/adapters"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	for _, bad := range []string{"http://", "https://", "//cdn", "<link"} {
		if strings.Contains(page, bad) {
			t.Errorf("page refers to %q: it must work offline", bad)
		}
	}
}

// TestServeClientGone: a client that leaves while its request waits frees
// its place in the queue at once, and the server goes on serving.
func TestServeClientGone(t *testing.T) {
	s := startServer(t, Options{MaxQueue: 1})
	release := make(chan struct{})
	entered := make(chan struct{}, 8)
	var once sync.Once
	s.batcher.gate = func() {
		entered <- struct{}{}
		once.Do(func() { <-release })
	}
	png := digit(t, 0)
	ctx, cancel := context.WithCancel(context.Background())
	gone := make(chan error)
	go func() {
		ct, body := multipartBody(t, "case2", "", png)
		req, _ := http.NewRequestWithContext(ctx, "POST", s.url+"/v1/predict", body)
		req.Header.Set("Content-Type", ct)
		_, err := client.Do(req)
		gone <- err
	}()
	<-entered
	cancel()
	if err := <-gone; err == nil {
		t.Fatal("the cancelled request got an answer")
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.inflight.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	after := make(chan int)
	go func() {
		_, code := predictForm(t, s, "case2", png)
		after <- code
	}()
	time.Sleep(50 * time.Millisecond)
	close(release)
	if code := <-after; code != 200 {
		t.Errorf("the next request got %d, want 200 (the one that left must not hold its place)", code)
	}
	if m := get(t, s.url+"/metrics"); !strings.Contains(m, `lorafit_serve_predict_requests_total{adapter="case2",code="499"} 1`) {
		t.Errorf("metrics: %s", grep(m, "predict_requests"))
	}
}
