package serve

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"sync"
	"time"
)

// metrics are the server's counters and histograms, written in
// Prometheus' text exposition format (version 0.0.4) by write.
type metrics struct {
	mu sync.Mutex

	cacheHits, cacheMisses, loads, loadFailures, evictions, unloads, rejected, batches int64

	http       map[[2]string]int64 // route, code
	requests   map[[2]string]int64 // adapter, code
	images     map[string]int64    // adapter
	latency    map[string]*histogram
	batchSize  *histogram
	batchMix   *histogram
	batchTime  *histogram
	loadTime   *histogram
	queueDelay *histogram
}

func newMetrics() *metrics {
	return &metrics{
		http: map[[2]string]int64{}, requests: map[[2]string]int64{}, images: map[string]int64{},
		latency:    map[string]*histogram{},
		batchSize:  newHistogram(1, 2, 4, 8, 16, 32, 64, 128, 256),
		batchMix:   newHistogram(1, 2, 3, 4, 8, 16, 32, 64),
		batchTime:  newHistogram(latencyBuckets...),
		loadTime:   newHistogram(latencyBuckets...),
		queueDelay: newHistogram(latencyBuckets...),
	}
}

var latencyBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

func (m *metrics) add(c *int64, n int64) {
	m.mu.Lock()
	*c += n
	m.mu.Unlock()
}

func (m *metrics) observeLoad(d time.Duration, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.loadFailures++
		return
	}
	m.loads++
	m.loadTime.observe(d.Seconds())
}

func (m *metrics) observeHTTP(route string, code int) {
	m.mu.Lock()
	m.http[[2]string{route, fmt.Sprint(code)}]++
	m.mu.Unlock()
}

// observePredict records a predict request for a known adapter (names
// outside the directory are never labels: they could be anything).
func (m *metrics) observePredict(adapter string, code, images int, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests[[2]string{adapter, fmt.Sprint(code)}]++
	if code == 200 {
		m.images[adapter] += int64(images)
		h := m.latency[adapter]
		if h == nil {
			h = newHistogram(latencyBuckets...)
			m.latency[adapter] = h
		}
		h.observe(d.Seconds())
	}
}

func (m *metrics) observeBatch(st Stats, d time.Duration, waited []time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.batches++
	m.batchSize.observe(float64(st.Images))
	m.batchMix.observe(float64(st.Adapters))
	m.batchTime.observe(d.Seconds())
	for _, w := range waited {
		m.queueDelay.observe(w.Seconds())
	}
}

// gauges are read at scrape time.
type gauges struct {
	loaded        int
	adapterBytes  int64
	queued        int
	inflight      int
	graphCompiles int64
}

func (m *metrics) write(w io.Writer, g gauges) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := func(name, typ, help string) { fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ) }

	p("lorafit_serve_http_requests_total", "counter", "HTTP requests by route and status code.")
	for _, k := range sortedKeys(m.http) {
		fmt.Fprintf(w, "lorafit_serve_http_requests_total{route=%s,code=%s} %d\n", quote(k[0]), quote(k[1]), m.http[k])
	}
	p("lorafit_serve_predict_requests_total", "counter", "Predict requests by adapter and status code.")
	for _, k := range sortedKeys(m.requests) {
		fmt.Fprintf(w, "lorafit_serve_predict_requests_total{adapter=%s,code=%s} %d\n", quote(k[0]), quote(k[1]), m.requests[k])
	}
	p("lorafit_serve_images_total", "counter", "Images classified, by adapter.")
	for _, k := range sortedKeys(m.images) {
		fmt.Fprintf(w, "lorafit_serve_images_total{adapter=%s} %d\n", quote(k), m.images[k])
	}
	p("lorafit_serve_request_duration_seconds", "histogram", "Latency of successful predict requests, by adapter, from the request's arrival to its reply.")
	for _, k := range sortedKeys(m.latency) {
		m.latency[k].write(w, "lorafit_serve_request_duration_seconds", "adapter="+quote(k)+",")
	}
	p("lorafit_serve_queue_delay_seconds", "histogram", "Time an image waited for its batch to start.")
	m.queueDelay.write(w, "lorafit_serve_queue_delay_seconds", "")
	p("lorafit_serve_batch_size", "histogram", "Images per batch run.")
	m.batchSize.write(w, "lorafit_serve_batch_size", "")
	p("lorafit_serve_batch_adapters", "histogram", "Distinct adapters per batch run.")
	m.batchMix.write(w, "lorafit_serve_batch_adapters", "")
	p("lorafit_serve_batch_duration_seconds", "histogram", "Time to run one batch.")
	m.batchTime.write(w, "lorafit_serve_batch_duration_seconds", "")
	p("lorafit_serve_adapter_load_duration_seconds", "histogram", "Time to read, bind and prepare an adapter.")
	m.loadTime.write(w, "lorafit_serve_adapter_load_duration_seconds", "")
	for _, c := range []struct {
		name, help string
		v          int64
	}{
		{"lorafit_serve_batches_total", "Batches run.", m.batches},
		{"lorafit_serve_adapter_cache_hits_total", "Uses of an adapter already loaded.", m.cacheHits},
		{"lorafit_serve_adapter_cache_misses_total", "Uses of an adapter that had to be loaded (or reloaded, its directory changed).", m.cacheMisses},
		{"lorafit_serve_adapter_loads_total", "Adapters loaded (first use, reload, PUT).", m.loads},
		{"lorafit_serve_adapter_load_failures_total", "Adapter loads that failed.", m.loadFailures},
		{"lorafit_serve_adapter_evictions_total", "Adapters evicted from the cache to respect --max-adapters or the memory bound.", m.evictions},
		{"lorafit_serve_adapter_unloads_total", "Adapters unloaded by DELETE.", m.unloads},
		{"lorafit_serve_rejected_total", "Predict requests refused because the queue was full (503).", m.rejected},
		{"lorafit_serve_graph_compiles_total", "Shared-pass graphs compiled (one per batch size, input size and adapter mix shape).", g.graphCompiles},
	} {
		p(c.name, "counter", c.help)
		fmt.Fprintf(w, "%s %d\n", c.name, c.v)
	}
	for _, c := range []struct {
		name, help string
		v          int64
	}{
		{"lorafit_serve_adapters_loaded", "Adapters in memory.", int64(g.loaded)},
		{"lorafit_serve_adapter_bytes", "Bytes of adapter tensors in memory.", g.adapterBytes},
		{"lorafit_serve_queued_images", "Images waiting for a batch.", int64(g.queued)},
		{"lorafit_serve_inflight_requests", "Predict requests being served.", int64(g.inflight)},
	} {
		p(c.name, "gauge", c.help)
		fmt.Fprintf(w, "%s %d\n", c.name, c.v)
	}
}

func sortedKeys[K interface{ ~string | ~[2]string }, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
	return keys
}

// quote is a Prometheus label value: backslash, quote and newline escaped.
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s) + `"`
}

type histogram struct {
	bounds []float64
	counts []int64 // per bucket, not cumulative
	sum    float64
	n      int64
}

func newHistogram(bounds ...float64) *histogram {
	return &histogram{bounds: bounds, counts: make([]int64, len(bounds)+1)}
}

func (h *histogram) observe(v float64) {
	i := sort.SearchFloat64s(h.bounds, v) // first bound ≥ v
	h.counts[i]++
	h.sum += v
	h.n++
}

func (h *histogram) write(w io.Writer, name, labels string) {
	var cum int64
	for i, b := range h.bounds {
		cum += h.counts[i]
		fmt.Fprintf(w, "%s_bucket{%sle=\"%s\"} %d\n", name, labels, formatFloat(b), cum)
	}
	fmt.Fprintf(w, "%s_bucket{%sle=\"+Inf\"} %d\n", name, labels, h.n)
	l := strings.TrimSuffix(labels, ",")
	if l != "" {
		l = "{" + l + "}"
	}
	fmt.Fprintf(w, "%s_sum%s %s\n", name, l, formatFloat(h.sum))
	fmt.Fprintf(w, "%s_count%s %d\n", name, l, h.n)
}

func formatFloat(v float64) string {
	if math.IsInf(v, 1) {
		return "+Inf"
	}
	return fmt.Sprintf("%g", v)
}
