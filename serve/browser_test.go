package serve

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/lorafit/lorafit/internal/testutil"
)

// chromium finds Debian's chromium (or another Chrome) to drive.
func chromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// TestServeBrowser drives the web page in headless Chromium: pick an
// adapter, upload a digit, read the top class and the latency off the
// page, check them against the API, switch adapters, and keep a
// screenshot ($LORAFIT_SERVE_SCREENSHOT, else the test's artifact
// directory: go test -artifacts). It skips without chromium, unless
// $LORAFIT_REQUIRE_BROWSER is set (CI).
func TestServeBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no browser")
	}
	chrome := chromium()
	if chrome == "" {
		if os.Getenv("LORAFIT_REQUIRE_BROWSER") != "" {
			t.Fatal("chromium is not installed and LORAFIT_REQUIRE_BROWSER is set")
		}
		t.Skip("chromium is not installed (apt-get install chromium): the browser test needs it")
	}
	s := startServer(t, Options{})
	png := testutil.Path("cmd/lorafit/testdata/" + digits[0])
	api := map[string]PredictResponse{}
	for _, name := range []string{"case4", "case2"} {
		r, code := predictForm(t, s, name, digit(t, 0))
		if code != 200 {
			t.Fatalf("API %s: %d", name, code)
		}
		api[name] = r
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1100, 760),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()

	// SetValue dispatches input and change events, as a user's pick does.
	pick := func(name string) error { return chromedp.Do(bctx, chromedp.SetValue(chromedp.ID("adapter"), name)) }
	text := func(sel string) string {
		v, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("reading %s: %v", sel, err)
		}
		return v
	}
	if err := chromedp.Do(bctx, chromedp.Navigate(s.url+"/"), chromedp.WaitVisible(chromedp.CSS(`body[data-ready="1"]`))); err != nil {
		t.Fatalf("chromium: %v", err)
	}
	if err := pick("case4"); err != nil {
		t.Fatalf("chromium: %v", err)
	}
	details := text("#details")
	err := chromedp.Do(bctx,
		chromedp.SetUploadFiles(chromedp.ID("file"), []string{png}),
		chromedp.WaitVisible(chromedp.CSS(`body[data-predicted="1"]`)))
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	top, prob := text("#results .bar-row:first-child .label"), text("#results .bar-row:first-child .prob")
	latency, status := text("#latency"), text("#status")
	shot, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	want := api["case4"].Predictions[0].Top[0]
	if top != want.Label || prob != fmt.Sprintf("%.2f%%", 100*want.Prob) {
		t.Errorf("page shows %q %s, the API says %q %.2f%%", top, prob, want.Label, 100*want.Prob)
	}
	if !strings.Contains(latency, "ms") || !strings.Contains(status, "adapter case4") {
		t.Errorf("latency %q, status %q", latency, status)
	}
	if !strings.Contains(details, "7") || !strings.Contains(details, "accuracy") && !strings.Contains(details, "28×28") {
		t.Errorf("the adapter's details: %q", details)
	}
	path := os.Getenv("LORAFIT_SERVE_SCREENSHOT")
	if path == "" {
		path = filepath.Join(t.ArtifactDir(), "serve.png")
	}
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes); page: %s %s; %s", path, len(shot), top, prob, latency)

	// Another adapter, picked after the image: the page predicts again.
	if err := pick("case2"); err != nil {
		t.Fatalf("chromium: %v", err)
	}
	wctx, wcancel := context.WithTimeout(bctx, 15*time.Second)
	defer wcancel()
	if err := chromedp.Do(wctx, chromedp.WaitVisible(chromedp.CSS(`body[data-predicted="2"]`))); err != nil {
		t.Fatalf("chromium: %v; the page says %q; the server: %s", err, text("#status"), grep(get(t, s.url+"/metrics"), "http_requests_total{"))
	}
	if top, want := text("#results .bar-row:first-child .label"), api["case2"].Predictions[0].Top[0].Label; top != want {
		t.Errorf("with case2 the page shows %q, the API says %q", top, want)
	}
}
