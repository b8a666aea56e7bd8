// Command loadgen measures a running `lorafit serve`: C concurrent clients
// send predict requests with a given adapter mix, bounded by a request
// count and a duration, and it prints throughput and latency percentiles.
// Several scenarios (servers and mixes) run in turns, in the same run, so
// their ratios compare like with like on a noisy machine.
//
//	go run ./scripts/loadgen --scenario hot=http://127.0.0.1:8080#a1 \
//	    --scenario mixed=http://127.0.0.1:8080#a1,a2,a3,a4,a5,a6,a7,a8 \
//	    --concurrency 64 --duration 15s --rounds 2 --ratio mixed/hot
//
// Only loopback servers are measured unless --allow-remote is given.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

type scenario struct {
	name, url string
	mix       []string // adapters, repeated by weight
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	var scenarios, ratios listFlag
	fs.Var(&scenarios, "scenario", "NAME=URL#ADAPTER[:WEIGHT],... (repeatable); \"base\" is the base's own classes")
	fs.Var(&ratios, "ratio", "A/B: print scenario A's throughput over B's (repeatable)")
	target := fs.String("url", "http://127.0.0.1:8080", "server, when no --scenario is given")
	adapters := fs.String("adapters", "base", "adapter mix, when no --scenario is given: a1,a2:3,...")
	imgs := fs.String("images", "cmd/lorafit/testdata/*.png", "images to send (a glob or comma list of PNG/JPEG files), in turn")
	perRequest := fs.Int("images-per-request", 1, "images in each request")
	conc := fs.Int("concurrency", 16, "concurrent clients")
	maxReq := fs.Int("requests", 5000, "requests per scenario and round, at most")
	dur := fs.Duration("duration", 15*time.Second, "time per scenario and round, at most")
	warmup := fs.Int("warmup", 0, "requests per scenario before measuring (default 2×concurrency: compiles graphs, loads adapters)")
	rounds := fs.Int("rounds", 1, "times each scenario runs, in turns")
	topK := fs.Int("top-k", 5, "top_k asked")
	timeout := fs.Duration("timeout", 60*time.Second, "per request")
	wait := fs.Duration("wait", 2*time.Minute, "how long to wait for servers to answer /healthz")
	allowRemote := fs.Bool("allow-remote", false, "allow servers not on loopback")
	asJSON := fs.Bool("json", false, "print the results as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(scenarios) == 0 {
		scenarios = append(scenarios, "run="+*target+"#"+*adapters)
	}
	if *conc < 1 || *conc > 4096 || *maxReq < 1 || *dur <= 0 || *rounds < 1 || *perRequest < 1 || *rounds > 100 {
		return fmt.Errorf("--concurrency 1..4096, --requests, --duration, --rounds 1..100 and --images-per-request must be positive")
	}
	if *warmup == 0 {
		*warmup = 2 * *conc
	}
	var scs []scenario
	for _, s := range scenarios {
		sc, err := parseScenario(s, *allowRemote)
		if err != nil {
			return err
		}
		scs = append(scs, sc)
	}
	files, err := imageFiles(*imgs)
	if err != nil {
		return err
	}
	var images [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		images = append(images, b)
	}
	client := &http.Client{Timeout: *timeout, Transport: &http.Transport{MaxIdleConnsPerHost: *conc, MaxConnsPerHost: *conc}}
	for _, sc := range scs {
		if err := waitReady(client, sc.url, *wait); err != nil {
			return err
		}
	}
	lg := &loadgen{client: client, images: images, perRequest: *perRequest, topK: *topK, conc: *conc}
	for _, sc := range scs {
		lg.measure(sc, *warmup, time.Hour) // warm-up, not kept
	}
	results := map[string]*result{}
	for r := range *rounds {
		for _, sc := range scs {
			// Requests the last scenario's deadline cut off may still be
			// on the server: start once it is idle.
			waitIdle(client, sc.url, 10*time.Second)
			res := lg.measure(sc, *maxReq, *dur)
			if !*asJSON {
				fmt.Fprintf(out, "round %d %-8s %s\n", r+1, sc.name, res)
			}
			if results[sc.name] == nil {
				results[sc.name] = &result{}
			}
			results[sc.name].merge(res)
		}
	}
	type summary struct {
		Scenario     string  `json:"scenario"`
		URL          string  `json:"url"`
		Adapters     int     `json:"adapters"`
		Requests     int     `json:"requests"`
		Errors       int     `json:"errors"`
		ImagesPerSec float64 `json:"images_per_s"`
		P50ms        float64 `json:"p50_ms"`
		P99ms        float64 `json:"p99_ms"`
		MeanBatch    float64 `json:"mean_batch_images"`
	}
	var sums []summary
	for _, sc := range scs {
		r := results[sc.name]
		distinct := map[string]bool{}
		for _, a := range sc.mix {
			distinct[a] = true
		}
		sums = append(sums, summary{sc.name, sc.url, len(distinct), len(r.lat), r.errors, r.throughput(), r.pct(50), r.pct(99), r.meanBatch()})
	}
	ratioOut := map[string]float64{}
	for _, rs := range ratios {
		a, b, ok := strings.Cut(rs, "/")
		ra, rb := results[a], results[b]
		if !ok || ra == nil || rb == nil {
			return fmt.Errorf("--ratio %q: want A/B with two scenario names", rs)
		}
		ratioOut[rs] = ra.throughput() / rb.throughput()
	}
	if *asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"date": time.Now().UTC().Format(time.RFC3339), "concurrency": *conc, "rounds": *rounds, "scenarios": sums, "ratios": ratioOut})
	}
	fmt.Fprintf(out, "\n%-8s %8s %8s %7s %10s %9s %9s %10s\n", "scenario", "adapters", "requests", "errors", "images/s", "p50 ms", "p99 ms", "batch avg")
	for _, s := range sums {
		fmt.Fprintf(out, "%-8s %8d %8d %7d %10.1f %9.1f %9.1f %10.1f\n", s.Scenario, s.Adapters, s.Requests, s.Errors, s.ImagesPerSec, s.P50ms, s.P99ms, s.MeanBatch)
	}
	for _, rs := range ratios {
		fmt.Fprintf(out, "throughput %s = %.3f\n", rs, ratioOut[rs])
	}
	for _, s := range sums {
		if s.Errors > 0 {
			return fmt.Errorf("%s: %d requests failed", s.Scenario, s.Errors)
		}
	}
	return nil
}

// parseScenario reads NAME=URL#ADAPTER[:WEIGHT],...
func parseScenario(s string, allowRemote bool) (scenario, error) {
	name, rest, ok := strings.Cut(s, "=")
	target, mix, ok2 := strings.Cut(rest, "#")
	if !ok || !ok2 || name == "" || strings.Contains(name, "/") {
		return scenario{}, fmt.Errorf("--scenario %q: want NAME=URL#ADAPTER[:WEIGHT],...", s)
	}
	u, err := url.Parse(target)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return scenario{}, fmt.Errorf("--scenario %q: %q is not an http:// URL", s, target)
	}
	if !allowRemote && !loopback(u.Hostname()) {
		return scenario{}, fmt.Errorf("--scenario %q: %s is not a loopback address (pass --allow-remote to measure it)", s, u.Hostname())
	}
	sc := scenario{name: name, url: strings.TrimSuffix(target, "/")}
	for _, part := range strings.Split(mix, ",") {
		a, w, hasW := strings.Cut(strings.TrimSpace(part), ":")
		n := 1
		if hasW {
			if n, err = strconv.Atoi(w); err != nil || n < 1 || n > 1000 {
				return scenario{}, fmt.Errorf("--scenario %q: weight %q: want 1 to 1000", s, w)
			}
		}
		if a == "" {
			return scenario{}, fmt.Errorf("--scenario %q: empty adapter name", s)
		}
		for range n {
			sc.mix = append(sc.mix, a)
		}
	}
	return sc, nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func imageFiles(spec string) ([]string, error) {
	var files []string
	for _, p := range strings.Split(spec, ",") {
		m, err := filepath.Glob(p)
		if err != nil {
			return nil, err
		}
		files = append(files, m...)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("--images %q: no files", spec)
	}
	return files, nil
}

func waitReady(c *http.Client, base string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		resp, err := c.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer /healthz within %v (%v)", base, wait, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitIdle waits (at most d) until the server has had no request in
// flight for 200 ms: requests that the previous scenario cut off may reach
// the server's handlers a moment after their connection closed.
func waitIdle(c *http.Client, base string, d time.Duration) {
	deadline := time.Now().Add(d)
	idle := 0
	for time.Now().Before(deadline) && idle < 5 {
		resp, err := c.Get(base + "/healthz")
		if err != nil {
			return
		}
		var h struct {
			Inflight int `json:"inflight_requests"`
		}
		err = json.NewDecoder(resp.Body).Decode(&h)
		resp.Body.Close()
		if err != nil {
			return
		}
		if idle++; h.Inflight != 0 {
			idle = 0
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type loadgen struct {
	client     *http.Client
	images     [][]byte
	perRequest int
	topK       int
	conc       int
}

// measure runs until n requests are done or d has passed.
func (lg *loadgen) measure(sc scenario, n int, d time.Duration) *result {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var mu sync.Mutex
	res := &result{}
	next := 0
	take := func() (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		if next >= n || ctx.Err() != nil {
			return 0, false
		}
		next++
		return next - 1, true
	}
	// The adapter of request i follows a shuffled cycle of the mix, the
	// same in every run.
	order := slices.Clone(sc.mix)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	t0 := time.Now()
	var wg sync.WaitGroup
	for range lg.conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i, ok := take()
				if !ok {
					return
				}
				lat, batch, err := lg.one(ctx, sc.url, order[i%len(order)], i)
				if errors.Is(err, errBusy) {
					time.Sleep(50 * time.Millisecond) // the server asked to retry later
				}
				mu.Lock()
				if err != nil {
					if !errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
						res.errors++
						if res.firstErr == nil {
							res.firstErr = err
						}
					}
				} else {
					res.lat = append(res.lat, lat)
					res.batch += batch
					res.images += lg.perRequest
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(t0)
	return res
}

// one sends request i and returns its latency and the size of its batch.
func (lg *loadgen) one(ctx context.Context, base, adapterName string, i int) (time.Duration, float64, error) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("adapter", adapterName)
	mw.WriteField("top_k", strconv.Itoa(lg.topK))
	for k := range lg.perRequest {
		w, _ := mw.CreateFormFile("image", fmt.Sprintf("%d-%d.png", i, k))
		w.Write(lg.images[(i*lg.perRequest+k)%len(lg.images)])
	}
	mw.Close()
	req, err := http.NewRequestWithContext(ctx, "POST", base+"/v1/predict", &buf)
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	t0 := time.Now()
	resp, err := lg.client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	lat := time.Since(t0)
	if err != nil {
		return 0, 0, err
	}
	if resp.StatusCode == http.StatusServiceUnavailable {
		return 0, 0, fmt.Errorf("%s: %w: %s", adapterName, errBusy, bytes.TrimSpace(body))
	}
	if resp.StatusCode != 200 {
		return 0, 0, fmt.Errorf("%s: %d %s", adapterName, resp.StatusCode, bytes.TrimSpace(body))
	}
	var r struct {
		Timing map[string]float64 `json:"timing_ms"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return 0, 0, err
	}
	return lat, r.Timing["batch_images"], nil
}

// errBusy is a 503: the server's queue was full.
var errBusy = errors.New("503")

type result struct {
	lat      []time.Duration
	images   int
	errors   int
	firstErr error
	batch    float64
	elapsed  time.Duration
}

func (r *result) merge(o *result) {
	r.lat = append(r.lat, o.lat...)
	r.images += o.images
	r.errors += o.errors
	r.batch += o.batch
	r.elapsed += o.elapsed
	if r.firstErr == nil {
		r.firstErr = o.firstErr
	}
}

func (r *result) throughput() float64 { return float64(r.images) / r.elapsed.Seconds() }

func (r *result) meanBatch() float64 {
	if len(r.lat) == 0 {
		return 0
	}
	return r.batch / float64(len(r.lat))
}

// pct is the p-th percentile latency in ms (nearest rank).
func (r *result) pct(p float64) float64 {
	if len(r.lat) == 0 {
		return math.NaN()
	}
	s := slices.Clone(r.lat)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return float64(s[max(i, 0)].Microseconds()) / 1000
}

func (r *result) String() string {
	s := fmt.Sprintf("%5d requests in %5.1fs: %7.1f images/s, p50 %6.1f ms, p99 %6.1f ms, batch avg %.1f",
		len(r.lat), r.elapsed.Seconds(), r.throughput(), r.pct(50), r.pct(99), r.meanBatch())
	if r.errors > 0 {
		s += fmt.Sprintf(", %d errors (first: %v)", r.errors, r.firstErr)
	}
	return s
}
