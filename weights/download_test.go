package weights

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lorafit/lorafit/progress"
)

// fixture is a fake checkpoint plus a Weights value naming it the way
// torchvision does (<arch>-<sha256[:8]>.pth).
type fixture struct {
	payload []byte
	w       *Weights
	dir     string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	// Keep the user's real torch hub cache out of the tests.
	t.Setenv("TORCH_HOME", t.TempDir())
	payload := make([]byte, 48<<10)
	rand.New(rand.NewSource(1)).Read(payload)
	sum := sha256.Sum256(payload)
	prefix := hex.EncodeToString(sum[:])[:8]
	return &fixture{
		payload: payload,
		w: &Weights{
			Name:         "testnet/IMAGENET1K_V1",
			Arch:         "testnet",
			URL:          "https://download.pytorch.org/models/testnet-" + prefix + ".pth",
			SHA256Prefix: prefix,
		},
		dir: t.TempDir(),
	}
}

// server records the requests it sees and delegates to handle, which gets the
// 1-based request number.
type server struct {
	*httptest.Server
	mu     sync.Mutex
	ranges []string
}

func (f *fixture) serve(t *testing.T, handle func(n int, w http.ResponseWriter, r *http.Request)) *server {
	t.Helper()
	s := &server{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/models/"+f.w.FileName() {
			http.NotFound(w, r)
			return
		}
		s.mu.Lock()
		s.ranges = append(s.ranges, r.Header.Get("Range"))
		n := len(s.ranges)
		s.mu.Unlock()
		handle(n, w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *server) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.ranges...)
}

// serveContent answers like a well-behaved static file server (Range, 206, 416).
func (f *fixture) serveContent(w http.ResponseWriter, r *http.Request) {
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.payload))
}

func (f *fixture) opts(s *server, progress *bytes.Buffer) DownloadOptions {
	o := DownloadOptions{RetryDelay: time.Millisecond, StallTimeout: 5 * time.Second}
	if s != nil {
		o.BaseURL = s.URL
	}
	if progress != nil {
		o.Progress = progress
	}
	return o
}

// checkDone asserts the verified file sits at its final name and nothing else
// (no .partial) is left in the cache dir.
func (f *fixture) checkDone(t *testing.T, path string) {
	t.Helper()
	if want := f.w.CachedPath(f.dir); path != want {
		t.Errorf("path = %s, want %s", path, want)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, f.payload) {
		t.Fatalf("downloaded %d bytes differ from the %d-byte payload", len(got), len(f.payload))
	}
	f.checkOnly(t, f.w.FileName())
}

func (f *fixture) checkOnly(t *testing.T, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("cache dir holds %v, want %v", got, names)
	}
}

func TestDownload(t *testing.T) {
	type setup struct {
		partial []byte // pre-existing .partial content, nil for none
		final   []byte // pre-existing final file content, nil for none
	}
	tests := []struct {
		name    string
		setup   func(f *fixture) setup
		handler func(f *fixture) func(n int, w http.ResponseWriter, r *http.Request)
		// wantRanges are the Range headers the server must see, in order.
		wantRanges func(f *fixture) []string
		wantNote   string // substring expected in the progress output
	}{
		{
			name:       "full download",
			handler:    func(f *fixture) func(int, http.ResponseWriter, *http.Request) { return drop(f.serveContent) },
			wantRanges: func(f *fixture) []string { return []string{""} },
			wantNote:   "100%",
		},
		{
			name: "resume after the connection is cut mid-body",
			handler: func(f *fixture) func(int, http.ResponseWriter, *http.Request) {
				return func(n int, w http.ResponseWriter, r *http.Request) {
					if n == 1 {
						w.Header().Set("Content-Length", fmt.Sprint(len(f.payload)))
						w.Write(f.payload[:len(f.payload)/2])
						w.(http.Flusher).Flush()
						panic(http.ErrAbortHandler) // closes the connection
					}
					f.serveContent(w, r)
				}
			},
			wantRanges: func(f *fixture) []string { return []string{"", fmt.Sprintf("bytes=%d-", len(f.payload)/2)} },
			wantNote:   "retrying",
		},
		{
			name: "resume an existing partial",
			setup: func(f *fixture) setup {
				return setup{partial: f.payload[:1000]}
			},
			handler:    func(f *fixture) func(int, http.ResponseWriter, *http.Request) { return drop(f.serveContent) },
			wantRanges: func(f *fixture) []string { return []string{"bytes=1000-"} },
		},
		{
			name: "server ignoring Range restarts cleanly",
			setup: func(f *fixture) setup {
				// Garbage longer than the file: appending to it, or
				// overwriting without truncating, fails verification.
				return setup{partial: bytes.Repeat([]byte{0xAA}, 50<<10)}
			},
			handler: func(f *fixture) func(int, http.ResponseWriter, *http.Request) {
				return func(_ int, w http.ResponseWriter, r *http.Request) { w.Write(f.payload) }
			},
			wantRanges: func(f *fixture) []string { return []string{fmt.Sprintf("bytes=%d-", 50<<10)} },
			wantNote:   "does not support resuming",
		},
		{
			name: "complete partial answered with 416 is verified and kept",
			setup: func(f *fixture) setup {
				return setup{partial: f.payload}
			},
			handler:    func(f *fixture) func(int, http.ResponseWriter, *http.Request) { return drop(f.serveContent) },
			wantRanges: func(f *fixture) []string { return []string{fmt.Sprintf("bytes=%d-", len(f.payload))} },
		},
		{
			name: "oversized partial answered with 416 is discarded",
			setup: func(f *fixture) setup {
				return setup{partial: make([]byte, len(f.payload)+10)}
			},
			handler: func(f *fixture) func(int, http.ResponseWriter, *http.Request) { return drop(f.serveContent) },
			wantRanges: func(f *fixture) []string {
				return []string{fmt.Sprintf("bytes=%d-", len(f.payload)+10), ""}
			},
			wantNote: "restarting",
		},
		{
			name: "5xx then success",
			handler: func(f *fixture) func(int, http.ResponseWriter, *http.Request) {
				return func(n int, w http.ResponseWriter, r *http.Request) {
					if n <= 2 {
						http.Error(w, "busy", http.StatusServiceUnavailable)
						return
					}
					f.serveContent(w, r)
				}
			},
			wantRanges: func(f *fixture) []string { return []string{"", "", ""} },
			wantNote:   "503",
		},
		{
			name: "stalled transfer is retried",
			handler: func(f *fixture) func(int, http.ResponseWriter, *http.Request) {
				return func(n int, w http.ResponseWriter, r *http.Request) {
					if n == 1 {
						w.Header().Set("Content-Length", fmt.Sprint(len(f.payload)))
						w.Write(f.payload[:100])
						w.(http.Flusher).Flush()
						select {
						case <-r.Context().Done():
						case <-time.After(5 * time.Second):
						}
						return
					}
					f.serveContent(w, r)
				}
			},
			wantRanges: func(f *fixture) []string { return []string{"", "bytes=100-"} },
			wantNote:   "no data received",
		},
		{
			name: "corrupt final file is replaced",
			setup: func(f *fixture) setup {
				return setup{final: []byte("not a checkpoint")}
			},
			handler:    func(f *fixture) func(int, http.ResponseWriter, *http.Request) { return drop(f.serveContent) },
			wantRanges: func(f *fixture) []string { return []string{""} },
			wantNote:   "fails sha256 verification",
		},
		{
			name: "verified final file means no request",
			setup: func(f *fixture) setup {
				return setup{final: f.payload}
			},
			handler:    func(f *fixture) func(int, http.ResponseWriter, *http.Request) { return drop(f.serveContent) },
			wantRanges: func(f *fixture) []string { return nil },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			if tc.setup != nil {
				s := tc.setup(f)
				if s.partial != nil {
					os.WriteFile(f.w.CachedPath(f.dir)+".partial", s.partial, 0o644)
				}
				if s.final != nil {
					os.WriteFile(f.w.CachedPath(f.dir), s.final, 0o644)
				}
			}
			srv := f.serve(t, tc.handler(f))
			var progress bytes.Buffer
			o := f.opts(srv, &progress)
			if strings.HasPrefix(tc.name, "stalled") {
				o.StallTimeout = 200 * time.Millisecond
			}
			path, err := Download(context.Background(), f.w, f.dir, o)
			if err != nil {
				t.Fatalf("Download: %v\nprogress:\n%s", err, progress.String())
			}
			f.checkDone(t, path)
			if got, want := srv.requests(), tc.wantRanges(f); strings.Join(got, "|") != strings.Join(want, "|") || len(got) != len(want) {
				t.Errorf("Range headers %q, want %q", got, want)
			}
			if !strings.Contains(progress.String(), tc.wantNote) {
				t.Errorf("progress output lacks %q:\n%s", tc.wantNote, progress.String())
			}
		})
	}
}

// drop adapts a plain handler to the numbered form.
func drop(h func(http.ResponseWriter, *http.Request)) func(int, http.ResponseWriter, *http.Request) {
	return func(_ int, w http.ResponseWriter, r *http.Request) { h(w, r) }
}

func TestDownloadFailures(t *testing.T) {
	tests := []struct {
		name     string
		handler  func(f *fixture) func(int, http.ResponseWriter, *http.Request)
		prefix   func(real string) string // override the expected hash prefix
		requests int
		wantErr  []string
	}{
		{
			name: "hash mismatch",
			handler: func(f *fixture) func(int, http.ResponseWriter, *http.Request) {
				return drop(f.serveContent)
			},
			prefix:   func(real string) string { return flip(real) },
			requests: 1,
			wantErr:  []string{"sha256 mismatch", "expected prefix", "the server sent a different file"},
		},
		{
			name: "5xx forever gives up",
			handler: func(f *fixture) func(int, http.ResponseWriter, *http.Request) {
				return func(_ int, w http.ResponseWriter, _ *http.Request) {
					http.Error(w, "down", http.StatusBadGateway)
				}
			},
			requests: 3,
			wantErr:  []string{"502 Bad Gateway", "gave up after 3 tries", "no network?"},
		},
		{
			name: "404 is not retried",
			handler: func(f *fixture) func(int, http.ResponseWriter, *http.Request) {
				return func(_ int, w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }
			},
			requests: 1,
			wantErr:  []string{"404 Not Found", "no network?"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			real := f.w.SHA256Prefix
			if tc.prefix != nil {
				f.w.SHA256Prefix = tc.prefix(real)
			}
			srv := f.serve(t, tc.handler(f))
			o := f.opts(srv, nil)
			o.Attempts = 3
			_, err := Download(context.Background(), f.w, f.dir, o)
			if err == nil {
				t.Fatal("Download succeeded")
			}
			var de *DownloadError
			if !errors.As(err, &de) {
				t.Fatalf("error %T is not a *DownloadError: %v", err, err)
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error lacks %q:\n%v", want, err)
				}
			}
			if got := len(srv.requests()); got != tc.requests {
				t.Errorf("%d requests, want %d", got, tc.requests)
			}
			if tc.prefix != nil {
				var hm *HashMismatchError
				if !errors.As(err, &hm) || hm.Expected != f.w.SHA256Prefix || !strings.HasPrefix(hm.Actual, real) {
					t.Errorf("want HashMismatchError expected=%s actual=%s…, got %v", f.w.SHA256Prefix, real, err)
				}
			}
			// Nothing usable may be left behind after a mismatch; other
			// failures may keep an empty or resumable partial but never a final file.
			if _, err := os.Stat(f.w.CachedPath(f.dir)); err == nil {
				t.Error("final file exists after a failed download")
			}
			if tc.prefix != nil {
				f.checkOnly(t)
			}
		})
	}
}

// flip changes the first hex digit so the prefix can no longer match.
func flip(prefix string) string {
	c := "0"
	if prefix[0] == '0' {
		c = "1"
	}
	return c + prefix[1:]
}

func TestDownloadOffline(t *testing.T) {
	f := newFixture(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens here any more: connection refused
	o := f.opts(nil, nil)
	o.BaseURL = "http://" + addr
	o.Attempts = 2
	_, err = Download(context.Background(), f.w, f.dir, o)
	if err == nil {
		t.Fatal("Download succeeded with nothing listening")
	}
	want := "^download " + regexp.QuoteMeta("http://"+addr+"/models/"+f.w.FileName()) + `: .+\n` +
		regexp.QuoteMeta("  no network? download it elsewhere and put it at "+f.w.CachedPath(f.dir)+
			" (sha256 must start with "+f.w.SHA256Prefix+"), or pass --weights /path/to/file.pth") + "$"
	if !regexp.MustCompile(want).MatchString(err.Error()) {
		t.Errorf("offline error:\n%v\nwant match for:\n%s", err, want)
	}
}

// failTransport simulates a machine without network without touching it.
type failTransport struct{}

func (failTransport) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("dial tcp: lookup download.pytorch.org: no such host")
}

func TestDownloadOfflineRealURL(t *testing.T) {
	t.Setenv("TORCH_HOME", t.TempDir())
	w, err := Lookup("resnet50/IMAGENET1K_V2")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	_, err = Download(context.Background(), w, dir, DownloadOptions{
		Client: &http.Client{Transport: failTransport{}}, Attempts: 1,
	})
	p := filepath.Join(dir, "resnet50-"+w.SHA256Prefix+".pth")
	want := "download " + w.URL + ": Get \"" + w.URL + "\": dial tcp: lookup download.pytorch.org: no such host (gave up after 1 tries without progress)\n" +
		"  no network? download it elsewhere and put it at " + p + " (sha256 must start with " + w.SHA256Prefix + "), or pass --weights /path/to/file.pth"
	if err == nil || err.Error() != want {
		t.Errorf("got:\n%v\nwant:\n%s", err, want)
	}
}

func TestDownloadUsesTorchHubCache(t *testing.T) {
	f := newFixture(t)
	hub, err := TorchHubDir()
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(hub, 0o755)
	hubFile := f.w.CachedPath(hub)
	if err := os.WriteFile(hubFile, f.payload, 0o644); err != nil {
		t.Fatal(err)
	}
	srv := f.serve(t, drop(f.serveContent))
	var progress bytes.Buffer
	path, err := Download(context.Background(), f.w, f.dir, f.opts(srv, &progress))
	if err != nil {
		t.Fatal(err)
	}
	if path != hubFile {
		t.Errorf("path = %s, want torch hub's %s", path, hubFile)
	}
	if n := len(srv.requests()); n != 0 {
		t.Errorf("%d requests despite a verified torch hub file", n)
	}
	if !strings.Contains(progress.String(), "torch hub") {
		t.Errorf("no mention of torch hub in %q", progress.String())
	}
}

func TestDownloadCancelled(t *testing.T) {
	f := newFixture(t)
	srv := f.serve(t, drop(f.serveContent))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Download(ctx, f.w, f.dir, f.opts(srv, nil))
	var de *DownloadError
	if !errors.Is(err, context.Canceled) || errors.As(err, &de) {
		t.Errorf("cancelled download: %v (want context.Canceled without offline advice)", err)
	}
}

func TestProgressNonTerminal(t *testing.T) {
	var buf bytes.Buffer
	p := newProgress(&buf, "x.pth")
	p.begin(0, 1000)
	for i := 0; i < 100; i++ {
		p.add(10)
	}
	p.finish()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 10 || strings.Contains(buf.String(), "\r") {
		t.Fatalf("want 10 plain lines (one per 10%%), got %d:\n%s", len(lines), buf.String())
	}
	if !strings.Contains(lines[9], "100%") {
		t.Errorf("last line %q lacks 100%%", lines[9])
	}
}

func TestProgressTerminal(t *testing.T) {
	var buf bytes.Buffer
	clock := time.Unix(0, 0)
	line := progress.NewTerminal(&buf)
	line.Now = func() time.Time { return clock }
	p := &progressBar{line: line, name: "x.pth", total: -1}
	p.begin(500_000, 10_000_000) // resumed at 0.5 MB
	for i := 0; i < 10; i++ {
		clock = clock.Add(time.Second)
		p.add(500_000)
	}
	p.note("hello")
	out := buf.String()
	for _, want := range []string{"\rx.pth", "5.5 MB / 10.0 MB", "55%", "0.5 MB/s", "ETA 9s", "\nhello\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("terminal output lacks %q:\n%q", want, out)
		}
	}
}

func TestSourceURL(t *testing.T) {
	w := &Weights{URL: "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"}
	tests := []struct{ base, want string }{
		{"", w.URL},
		{"http://127.0.0.1:9", "http://127.0.0.1:9/models/resnet50-11ad3fa6.pth"},
		{"https://mirror.example/pytorch/", "https://mirror.example/pytorch/models/resnet50-11ad3fa6.pth"},
	}
	for _, tc := range tests {
		got, err := w.sourceURL(tc.base)
		if err != nil || got != tc.want {
			t.Errorf("sourceURL(%q) = %q %v, want %q", tc.base, got, err, tc.want)
		}
	}
	if _, err := w.sourceURL("mirror.example"); err == nil {
		t.Error("base URL without scheme accepted")
	}
}

func TestParseContentRange(t *testing.T) {
	tests := []struct {
		in          string
		start, size int64
		ok          bool
	}{
		{"bytes 100-199/1000", 100, 1000, true},
		{"bytes 0-0/*", 0, -1, true},
		{"bytes */1000", 0, 1000, true},
		{"", 0, -1, false},
		{"bytes 1-2", 0, -1, false},
		{"items 1-2/3", 0, -1, false},
		{"bytes x-2/3", 0, 3, false},
	}
	for _, tc := range tests {
		s, n, ok := parseContentRange(tc.in)
		if s != tc.start || n != tc.size || ok != tc.ok {
			t.Errorf("parseContentRange(%q) = %d %d %v, want %d %d %v", tc.in, s, n, ok, tc.start, tc.size, tc.ok)
		}
	}
}

func TestVerifyFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	os.WriteFile(p, []byte("abc"), 0o644)
	// sha256("abc") = ba7816bf...
	tests := []struct {
		prefix string
		ok     bool
	}{
		{"ba7816bf", true},
		{"BA7816BF", true},
		{"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", true},
		{"", true},
		{"ba7816be", false},
	}
	for _, tc := range tests {
		if err := VerifyFile(p, tc.prefix); (err == nil) != tc.ok {
			t.Errorf("VerifyFile(%q) = %v", tc.prefix, err)
		}
	}
	if VerifyFile(p+".missing", "") == nil {
		t.Error("missing file verified")
	}
}
