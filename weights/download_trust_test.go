package weights

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConcurrentDownloads: two downloads of one file into one cache at the
// same time both succeed with the verified file, and it is fetched once.
func TestConcurrentDownloads(t *testing.T) {
	f := newFixture(t)
	srv := f.serve(t, drop(func(w http.ResponseWriter, r *http.Request) {
		// Slow enough that the two downloads overlap.
		w.Header().Set("Content-Length", fmt.Sprint(len(f.payload)))
		for i := 0; i < len(f.payload); i += 4096 {
			w.Write(f.payload[i:min(i+4096, len(f.payload))])
			w.(http.Flusher).Flush()
			time.Sleep(5 * time.Millisecond)
		}
	}))
	var wg sync.WaitGroup
	paths := make([]string, 2)
	errs := make([]error, 2)
	progress := make([]bytes.Buffer, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			paths[i], errs[i] = Download(context.Background(), f.w, f.dir, f.opts(srv, &progress[i]))
		}()
		time.Sleep(20 * time.Millisecond) // the first is under way
	}
	wg.Wait()
	for i := range 2 {
		if errs[i] != nil {
			t.Fatalf("download %d: %v\n%s", i, errs[i], progress[i].String())
		}
		f.checkDone(t, paths[i])
	}
	if n := len(srv.requests()); n != 1 {
		t.Errorf("%d requests, want 1: the second download waits and uses the first's file", n)
	}
	if !strings.Contains(progress[1].String(), "waiting for another download") {
		t.Errorf("second download's progress lacks the wait note:\n%s", progress[1].String())
	}
}

// TestDownloadLeftovers: what a killed run leaves (a lock file nobody
// holds, a partial that is not a prefix of the file) neither blocks nor
// breaks the next run.
func TestDownloadLeftovers(t *testing.T) {
	f := newFixture(t)
	final := f.w.CachedPath(f.dir)
	os.WriteFile(final+".lock", nil, 0o644)
	os.WriteFile(final+".partial", bytes.Repeat([]byte{0xAA}, 1000), 0o644)
	srv := f.serve(t, drop(f.serveContent))
	var progress bytes.Buffer
	start := time.Now()
	path, err := Download(context.Background(), f.w, f.dir, f.opts(srv, &progress))
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v: the stale lock blocked", d)
	}
	f.checkDone(t, path)
	if got, want := strings.Join(srv.requests(), "|"), "bytes=1000-|"; got != want {
		t.Errorf("Range headers %q, want %q (resume, then start over)", got, want)
	}
	if !strings.Contains(progress.String(), "does not belong to this file") {
		t.Errorf("progress lacks the restart note:\n%s", progress.String())
	}
}

// dnsTransport fails every request the way the dialer does when the DNS
// says the host does not exist (or, with timeout, cannot be reached).
type dnsTransport struct {
	timeout bool
	calls   atomic.Int32
}

func (d *dnsTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	d.calls.Add(1)
	de := &net.DNSError{Err: "no such host", Name: r.URL.Hostname(), IsNotFound: !d.timeout, IsTimeout: d.timeout}
	if d.timeout {
		de.Err = "i/o timeout"
	}
	return nil, &net.OpError{Op: "dial", Net: "tcp", Err: de}
}

func TestDownloadDNS(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout bool
		calls   int32
		want    string
	}{
		{"no such host fails at once", false, 1, "no such host\n  no network?"},
		{"a DNS timeout is retried", true, 3, "i/o timeout (gave up after 3 tries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			tr := &dnsTransport{timeout: tc.timeout}
			o := f.opts(nil, nil)
			o.Client, o.Attempts = &http.Client{Transport: tr}, 3
			if !tc.timeout {
				o.RetryDelay = time.Second // retrying would show in the time
			}
			start := time.Now()
			_, err := Download(context.Background(), f.w, f.dir, o)
			var de *DownloadError
			if !errors.As(err, &de) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
			if got := tr.calls.Load(); got != tc.calls {
				t.Errorf("%d requests, want %d", got, tc.calls)
			}
			if d := time.Since(start); !tc.timeout && d > 500*time.Millisecond {
				t.Errorf("took %v", d)
			}
		})
	}
}

// TestDownloadUnresolvableHost goes through the real resolver: a name under
// .invalid (RFC 6761) never resolves, and Download must say so within a
// second instead of retrying for seconds.
func TestDownloadUnresolvableHost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := net.DefaultResolver.LookupHost(ctx, "lorafit-test.invalid")
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsNotFound {
		t.Skipf("this machine's resolver does not answer NXDOMAIN for .invalid (%v); TestDownloadDNS covers the logic", err)
	}
	f := newFixture(t)
	o := f.opts(nil, nil)
	o.BaseURL, o.RetryDelay = "http://lorafit-test.invalid", time.Second
	start := time.Now()
	_, err = Download(context.Background(), f.w, f.dir, o)
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %v, want under a second", d)
	}
	if err == nil || !strings.Contains(err.Error(), "lorafit-test.invalid") || !strings.Contains(err.Error(), "no such host") ||
		strings.Contains(err.Error(), "gave up") {
		t.Errorf("err = %v", err)
	}
}

// TestOpenExplainsBadCachedFile: a cached file that fails verification is
// reported as such (path, hash, fix), not as "not downloaded yet".
func TestOpenExplainsBadCachedFile(t *testing.T) {
	t.Setenv("TORCH_HOME", t.TempDir())
	w, err := Lookup("resnet18/IMAGENET1K_V1")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		make func(path string)
		want func(path string) string
	}{
		{"missing", func(string) {}, func(string) string {
			return "resnet18/IMAGENET1K_V1 is not downloaded yet: run `lorafit weights download resnet18/IMAGENET1K_V1`"
		}},
		{"wrong bytes", func(p string) { os.WriteFile(p, []byte("damaged"), 0o644) }, func(p string) string {
			// sha256("damaged") = 41f0c27c00e8…
			return "cached file " + p + " is damaged or not resnet18-f37072fd.pth: its sha256 starts with 41f0c27c00e8, not f37072fd; delete it and run `lorafit weights download resnet18/IMAGENET1K_V1`"
		}},
		{"a directory", func(p string) { os.Mkdir(p, 0o755) }, func(p string) string {
			return "cached file " + p + " cannot be used (" + p + " is a directory, not a regular file); remove it"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := w.CachedPath(dir)
			tc.make(p)
			_, _, err := Open(context.Background(), w.Name, OpenOptions{CacheDir: dir})
			if want := tc.want(p); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("err = %v\nwant %s", err, want)
			}
		})
	}
}

// TestBaseURLFromEnv: $LORAFIT_WEIGHTS_URL points downloads at a mirror
// (what tests of the CLI use to be offline on purpose); an explicit
// BaseURL wins over it, and a malformed one names the variable.
func TestBaseURLFromEnv(t *testing.T) {
	f := newFixture(t)
	srv := f.serve(t, drop(f.serveContent))
	t.Setenv(BaseURLEnv, srv.URL)
	path, err := Download(context.Background(), f.w, f.dir, f.opts(nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	f.checkDone(t, path)
	if n := len(srv.requests()); n != 1 {
		t.Errorf("%d requests to the mirror, want 1", n)
	}
	t.Setenv(BaseURLEnv, "mirror-without-scheme")
	os.Remove(path)
	_, err = Download(context.Background(), f.w, f.dir, f.opts(nil, nil))
	if err == nil || !strings.Contains(err.Error(), BaseURLEnv) || !strings.Contains(err.Error(), "mirror-without-scheme") {
		t.Errorf("malformed $%s: err = %v", BaseURLEnv, err)
	}
	o := f.opts(srv, nil) // explicit BaseURL
	if _, err := Download(context.Background(), f.w, f.dir, o); err != nil {
		t.Errorf("explicit BaseURL with a malformed $%s: %v", BaseURLEnv, err)
	}
}
