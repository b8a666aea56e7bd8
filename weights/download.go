package weights

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// DownloadOptions tunes Download; the zero value is right for the CLI.
type DownloadOptions struct {
	// BaseURL, if set, replaces the scheme and host of the canonical URL
	// (a path in BaseURL is prepended), for mirrors and tests:
	// "http://mirror:8080" fetches http://mirror:8080/models/<file>.
	// Empty means $LORAFIT_WEIGHTS_URL, else download.pytorch.org.
	BaseURL string
	// Progress receives the progress bar and notes; nil means silent.
	Progress io.Writer
	// Client defaults to a plain http.Client (no overall timeout: files are
	// hundreds of MB; stalls are caught by StallTimeout instead).
	Client *http.Client
	// Attempts is how many consecutive tries that make no progress are
	// allowed before giving up (default 4). A try that grows the partial
	// file resets the count, so a flaky link still finishes a large file.
	Attempts int
	// RetryDelay is the first backoff, doubled per failed try up to 30s
	// (default 1s).
	RetryDelay time.Duration
	// StallTimeout aborts and retries a try that receives no bytes (or no
	// response headers) for this long (default 60s).
	StallTimeout time.Duration
}

// BaseURLEnv names the variable that points every download at a mirror
// (DownloadOptions.BaseURL).
const BaseURLEnv = "LORAFIT_WEIGHTS_URL"

func (o *DownloadOptions) defaults() {
	if o.BaseURL == "" {
		o.BaseURL = os.Getenv(BaseURLEnv)
	}
	if o.Client == nil {
		o.Client = &http.Client{}
	}
	if o.Attempts <= 0 {
		o.Attempts = 4
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = time.Second
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = 60 * time.Second
	}
}

const maxRetryDelay = 30 * time.Second

// DownloadError is returned when Download cannot produce a verified file. Its
// message tells an offline user exactly which file to fetch by other means
// and where to put it.
type DownloadError struct {
	URL          string // the URL that was tried
	Path         string // where the verified file is expected
	SHA256Prefix string
	Err          error
}

func (e *DownloadError) Error() string {
	lead := "no network? download it elsewhere"
	var hm *HashMismatchError
	if errors.As(e.Err, &hm) {
		lead = "the server sent a different file (removed); download it elsewhere"
	}
	return fmt.Sprintf("download %s: %v\n  %s and put it at %s (sha256 must start with %s), or pass --weights /path/to/file.pth",
		e.URL, e.Err, lead, e.Path, e.SHA256Prefix)
}

func (e *DownloadError) Unwrap() error { return e.Err }

// Download makes a verified copy of w available and returns its path.
//
// An existing verified file in dir (default CacheDir()) or in torch hub's
// checkpoint directory is used as is. Otherwise the file is fetched to
// <name>.partial, resuming an earlier partial with a Range request, retrying
// transient failures with backoff, then checked against w.SHA256Prefix and
// atomically renamed into place, so a crash never leaves a truncated file
// under the final name. A lock beside the file (<name>.lock) makes
// concurrent downloads of one file into one cache take turns: the second
// finds the first's verified file and uses it. A partial left by a killed
// run is resumed; if the result fails verification it is fetched once more
// from the start, since the stale part may be what is wrong. A host name
// that does not resolve fails at once: that does not heal in seconds.
func Download(ctx context.Context, w *Weights, dir string, opts DownloadOptions) (string, error) {
	opts.defaults()
	if dir == "" {
		d, err := CacheDir()
		if err != nil {
			return "", err
		}
		dir = d
	}
	final := w.CachedPath(dir)
	bar := newProgress(opts.Progress, w.FileName())

	if p, fromHub, err := w.Locate(dir); err == nil {
		if fromHub {
			bar.note("using %s from torch hub's cache (sha256 verified)", p)
		}
		return p, nil
	}
	src, err := w.sourceURL(opts.BaseURL)
	if err != nil {
		return "", err
	}
	fail := func(err error) (string, error) {
		if ctx.Err() != nil {
			// The user cancelled: keep the partial for a later resume and
			// skip the offline advice.
			return "", fmt.Errorf("download %s: %w", src, err)
		}
		return "", &DownloadError{URL: src, Path: final, SHA256Prefix: w.SHA256Prefix, Err: err}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail(err)
	}
	unlock, err := lockFile(ctx, final+".lock", func() {
		bar.note("waiting for another download of %s into %s", w.FileName(), dir)
	})
	if err != nil {
		return fail(err)
	}
	defer unlock()
	// Whoever held the lock may have just finished.
	var ue *unusableError
	var hm *HashMismatchError
	if p, _, err := w.Locate(dir); err == nil {
		return p, nil
	} else if errors.As(err, &hm) {
		bar.note("%s fails sha256 verification; downloading it again", final)
	} else if errors.As(err, &ue) {
		bar.note("%s cannot be used (%v); downloading it again", final, ue.cause)
	}

	partial := final + ".partial"
	for resumed := fileSize(partial) > 0; ; resumed = false {
		if err := fetch(ctx, src, partial, opts, bar); err != nil {
			return fail(err)
		}
		err := VerifyFile(partial, w.SHA256Prefix)
		if err == nil {
			break
		}
		os.Remove(partial)
		if !resumed {
			return fail(err)
		}
		bar.note("the partial file an earlier run left does not belong to this file; downloading it again from the start")
	}
	if err := os.Rename(partial, final); err != nil {
		return fail(err)
	}
	return final, nil
}

// sourceURL applies DownloadOptions.BaseURL to w.URL.
func (w *Weights) sourceURL(base string) (string, error) {
	if base == "" {
		return w.URL, nil
	}
	b, err := url.Parse(base)
	if err != nil || b.Scheme == "" || b.Host == "" {
		return "", fmt.Errorf("weights: base URL %q (DownloadOptions.BaseURL or $%s) needs a scheme and host", base, BaseURLEnv)
	}
	u, err := url.Parse(w.URL)
	if err != nil {
		return "", fmt.Errorf("weights: %s: %w", w.Name, err)
	}
	u.Scheme, u.Host, u.User = b.Scheme, b.Host, b.User
	u.Path = strings.TrimSuffix(b.Path, "/") + u.Path
	u.RawPath = ""
	return u.String(), nil
}

// retryableError marks failures worth another try: network errors, cut
// connections, stalls and 5xx/408/429 responses.
type retryableError struct{ err error }

func (e *retryableError) Error() string { return e.err.Error() }
func (e *retryableError) Unwrap() error { return e.err }

func retryable(err error) error { return &retryableError{err} }

// statusError is a non-success HTTP response.
type statusError struct {
	code   int
	status string
}

func (e *statusError) Error() string { return "server answered " + e.status }

// errStalled is the cancel cause used by the stall watchdog.
var errStalled = errors.New("no data received")

// fetch drives fetchOnce until the partial file is complete, retrying with
// exponential backoff while tries keep failing without progress.
func fetch(ctx context.Context, src, partial string, opts DownloadOptions, bar *progressBar) error {
	best := fileSize(partial)
	failures := 0
	delay := opts.RetryDelay
	for {
		err := fetchOnce(ctx, src, partial, opts, bar)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var re *retryableError
		if !errors.As(err, &re) {
			return err
		}
		if n := fileSize(partial); n > best {
			// Progress made: reset the count and the backoff.
			best, failures, delay = n, 0, opts.RetryDelay
		} else {
			failures++
		}
		if failures >= opts.Attempts {
			return fmt.Errorf("%w (gave up after %d tries without progress)", err, failures)
		}
		bar.note("%v; retrying in %v", err, delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, maxRetryDelay)
	}
}

// fetchOnce makes one request, continuing the partial file when the server
// honours Range and starting over when it does not.
func fetchOnce(ctx context.Context, src, partial string, opts DownloadOptions, bar *progressBar) error {
	offset := fileSize(partial)

	// The watchdog cancels the request when nothing arrives for
	// StallTimeout; every read re-arms it.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	watchdog := time.AfterFunc(opts.StallTimeout, func() {
		cancel(fmt.Errorf("%w for %v", errStalled, opts.StallTimeout))
	})
	defer watchdog.Stop()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
	if err != nil {
		return err
	}
	// identity: byte ranges must refer to the file itself, not a gzip stream.
	req.Header.Set("Accept-Encoding", "identity")
	if offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	resp, err := opts.Client.Do(req)
	if err != nil {
		return classify(ctx, err)
	}
	defer resp.Body.Close()

	var total int64 = -1
	flags := os.O_WRONLY | os.O_CREATE
	switch resp.StatusCode {
	case http.StatusPartialContent:
		start, size, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != offset {
			// A range we did not ask for: drop the partial and start over.
			bar.note("server sent an unexpected range %q; restarting", resp.Header.Get("Content-Range"))
			if err := removeIfExists(partial); err != nil {
				return err
			}
			return retryable(errors.New("unexpected Content-Range"))
		}
		total = size
		flags |= os.O_APPEND
	case http.StatusOK:
		if offset > 0 {
			bar.note("server does not support resuming; restarting from 0")
		}
		offset = 0
		total = resp.ContentLength
		flags |= os.O_TRUNC
	case http.StatusRequestedRangeNotSatisfiable:
		// Our partial reaches (or passes) the end of the file. If it is
		// exactly the file's size it is complete and verification decides;
		// anything else is stale and is discarded.
		_, size, _ := parseContentRange(resp.Header.Get("Content-Range"))
		if size >= 0 && size == offset {
			return nil
		}
		bar.note("partial file does not match the server's; restarting")
		if err := removeIfExists(partial); err != nil {
			return err
		}
		return retryable(errors.New("stale partial file"))
	default:
		se := &statusError{code: resp.StatusCode, status: resp.Status}
		if resp.StatusCode >= 500 || resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests {
			return retryable(se)
		}
		return se
	}

	f, err := os.OpenFile(partial, flags, 0o644)
	if err != nil {
		return err
	}
	bar.begin(offset, total)
	n, copyErr := copyBody(f, resp.Body, bar, func() { watchdog.Reset(opts.StallTimeout) })
	syncErr := f.Sync()
	closeErr := f.Close()
	switch {
	case copyErr != nil:
		if cause := context.Cause(ctx); errors.Is(cause, errStalled) {
			return retryable(cause)
		}
		return copyErr
	case syncErr != nil:
		return syncErr
	case closeErr != nil:
		return closeErr
	}
	if total >= 0 && offset+n != total {
		return retryable(fmt.Errorf("connection closed after %d of %d bytes", offset+n, total))
	}
	bar.finish()
	return nil
}

// writeError marks a local write failure (disk full, ...), which retrying
// cannot fix, as opposed to a read failure from the network.
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// copyBody copies r to f, reporting progress and re-arming the watchdog. Read
// errors are retryable; write errors are not.
func copyBody(f *os.File, r io.Reader, bar *progressBar, tick func()) (int64, error) {
	buf := make([]byte, 256<<10)
	var n int64
	for {
		m, rerr := r.Read(buf)
		if m > 0 {
			tick()
			if _, werr := f.Write(buf[:m]); werr != nil {
				return n, &writeError{werr}
			}
			n += int64(m)
			bar.add(m)
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, retryable(rerr)
		}
	}
}

// classify turns a transport error into a retryable one unless retrying is
// pointless (cancelled by the caller, bad certificate, malformed URL, a
// host name the DNS says does not exist: offline, or a typo in a mirror).
func classify(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); errors.Is(cause, errStalled) {
		return retryable(cause)
	}
	var dns *net.DNSError
	if errors.As(err, &dns) && dns.IsNotFound {
		return err
	}
	var cve *tls.CertificateVerificationError
	if errors.As(err, &cve) {
		return err
	}
	var ue *url.Error
	if errors.As(err, &ue) && ue.Op == "parse" {
		return err
	}
	return retryable(err)
}

// parseContentRange parses "bytes start-end/size" or "bytes */size";
// size is -1 when given as "*".
func parseContentRange(h string) (start, size int64, ok bool) {
	rest, found := strings.CutPrefix(h, "bytes ")
	if !found {
		return 0, -1, false
	}
	rng, sz, found := strings.Cut(rest, "/")
	if !found {
		return 0, -1, false
	}
	size = -1
	if sz != "*" {
		v, err := strconv.ParseInt(sz, 10, 64)
		if err != nil {
			return 0, -1, false
		}
		size = v
	}
	if rng == "*" {
		return 0, size, true
	}
	a, _, found := strings.Cut(rng, "-")
	if !found {
		return 0, size, false
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil {
		return 0, size, false
	}
	return start, size, true
}

// fileSize is the size of path, or 0 when it does not exist.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
