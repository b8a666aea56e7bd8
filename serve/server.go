package serve

import (
	"context"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomlx/compute"

	"github.com/lorafit/lorafit/adapter"
	"github.com/lorafit/lorafit/backbone"
	"github.com/lorafit/lorafit/classifier"
	"github.com/lorafit/lorafit/limits"
	"github.com/lorafit/lorafit/preprocess"
)

// Options configure a Server; zero fields take the defaults shown.
type Options struct {
	// AdaptersDir holds one adapter directory per adapter ("": none).
	AdaptersDir string
	// BaseAdapter is the head of a merged model (weights.Load's second
	// result), served as "base"; nil for a plain base.
	BaseAdapter *adapter.Adapter
	// BasePreprocess is how inputs of the base's own classes are
	// preprocessed (default ImageNet's at 224).
	BasePreprocess preprocess.Preprocess
	// BaseLabels names the base's classes (nil: "class N").
	BaseLabels []string
	// BaseSource describes the base weights, for the listing.
	BaseSource string

	MaxAdapters     int           // adapters kept loaded (128)
	MaxAdapterBytes int64         // bytes of adapter tensors kept loaded (1 GiB)
	MaxBatch        int           // images per batch (64)
	BatchWait       time.Duration // longest wait for a batch to fill (5ms); negative: none
	MaxQueue        int           // predict requests admitted at once; more get 503 (128)
	MaxBodyBytes    int64         // request body (16 MiB)
	MaxImages       int           // images per request (64)
	MaxImagePixels  int64         // width×height of one image, checked before decoding (16,777,216)
	MaxTopK         int           // largest top_k (1000)
	NoMerge         bool          // never run one adapter alone on its merged weights (see EngineOptions)
	CheckEvery      time.Duration // how often a loaded adapter's directory is checked for changes (2s; negative: on every use)

	ReadHeaderTimeout time.Duration // 10s
	ReadTimeout       time.Duration // whole request, body included (30s)
	WriteTimeout      time.Duration // 2m
	IdleTimeout       time.Duration // 2m

	Logger *slog.Logger // default slog.Default()
}

func (o *Options) defaults() {
	setInt := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	set64 := func(v *int64, d int64) {
		if *v <= 0 {
			*v = d
		}
	}
	setDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	setInt(&o.MaxAdapters, 128)
	set64(&o.MaxAdapterBytes, 1<<30)
	setInt(&o.MaxBatch, 64)
	setDur(&o.BatchWait, 5*time.Millisecond)
	setInt(&o.MaxQueue, 128)
	set64(&o.MaxBodyBytes, 16<<20)
	setInt(&o.MaxImages, 64)
	set64(&o.MaxImagePixels, 4096*4096)
	setInt(&o.MaxTopK, 1000)
	setDur(&o.CheckEvery, 2*time.Second)
	setDur(&o.ReadHeaderTimeout, 10*time.Second)
	setDur(&o.ReadTimeout, 30*time.Second)
	setDur(&o.WriteTimeout, 2*time.Minute)
	setDur(&o.IdleTimeout, 2*time.Minute)
	if o.BasePreprocess.Crop == 0 {
		o.BasePreprocess = preprocess.ImageNet(224)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Server is `lorafit serve`: one base in memory, the adapters of a
// directory chosen per request, requests batched across adapters, an HTTP
// API and a web page.
type Server struct {
	opts     Options
	engine   *Engine
	registry *Registry
	batcher  *batcher
	metrics  *metrics
	base     *Model
	admit    chan struct{} // one token per admitted predict request
	inflight atomic.Int64
	http     *http.Server
	log      *slog.Logger
}

// New prepares a server for base on backend b. It loads no adapter yet:
// each is loaded on first use.
func New(b compute.Backend, base *backbone.Base, opts Options) (*Server, error) {
	opts.defaults()
	if opts.AdaptersDir != "" {
		if fi, err := os.Stat(opts.AdaptersDir); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("adapters directory %s: not a readable directory", opts.AdaptersDir)
		}
	}
	s := &Server{opts: opts, metrics: newMetrics(), admit: make(chan struct{}, opts.MaxQueue), log: opts.Logger}
	s.engine = NewEngine(b, base, EngineOptions{MaxBatch: opts.MaxBatch, NoMerge: opts.NoMerge})
	labels := opts.BaseLabels
	if a := opts.BaseAdapter; a != nil && len(a.Info.ClassNames) == a.NumClasses() {
		labels = a.Info.ClassNames
	}
	bm, err := s.engine.Prepare(BaseName, opts.BaseAdapter, opts.BasePreprocess, labels)
	if err != nil {
		return nil, err
	}
	if len(bm.Labels) != bm.NumClasses() {
		bm.Labels = nil
	}
	s.base = bm
	s.base.hold() // never retired
	s.registry = NewRegistry(opts.AdaptersDir, s.engine, bm, s.metrics)
	s.registry.MaxAdapters, s.registry.MaxBytes, s.registry.CheckEvery = opts.MaxAdapters, opts.MaxAdapterBytes, opts.CheckEvery
	wait := max(opts.BatchWait, 0)
	s.batcher = newBatcher(s.engine, opts.MaxBatch, wait, opts.MaxQueue, s.metrics)
	s.http = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: opts.ReadHeaderTimeout,
		ReadTimeout:       opts.ReadTimeout,
		WriteTimeout:      opts.WriteTimeout,
		IdleTimeout:       opts.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// Warm compiles the graphs the base's own classes (or any one adapter on
// its merged weights, at the base's input size) need for every batch size,
// so that first requests do not wait for compilation.
func (s *Server) Warm(ctx context.Context) error { return s.engine.Warm(ctx, s.base.Pre.Crop) }

// Registry is the server's adapter cache.
func (s *Server) Registry() *Registry { return s.registry }

// Serve accepts connections on l until Shutdown.
func (s *Server) Serve(l net.Listener) error {
	err := s.http.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting requests, lets those in flight finish (until
// ctx ends; then it closes their connections), and frees the graphs.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	if err != nil {
		s.http.Close()
	}
	s.batcher.close()
	s.registry.Close()
	s.engine.Close()
	return err
}

//go:embed web
var web embed.FS

// Handler routes the API. It does its own routing, not http.ServeMux's,
// so that every error is JSON and a path with dot segments is refused
// rather than redirected.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, code: 200}
		route := s.route(rec, r)
		s.metrics.observeHTTP(route, rec.code)
	})
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

// route serves one request and returns its route's name (a metrics label).
func (s *Server) route(w http.ResponseWriter, r *http.Request) (route string) {
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.log.Error("serve: panic", "route", route, "panic", p)
			writeError(w, http.StatusInternalServerError, "internal error: %v", p)
		}
	}()
	path := r.URL.Path
	method := func(allowed ...string) bool {
		for _, m := range allowed {
			if r.Method == m || (m == http.MethodGet && r.Method == http.MethodHead) {
				return true
			}
		}
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeError(w, http.StatusMethodNotAllowed, "%s %s: allowed: %s", r.Method, path, strings.Join(allowed, ", "))
		return false
	}
	switch {
	case path == "/" || path == "/index.html":
		if method(http.MethodGet) {
			page, _ := web.ReadFile("web/index.html")
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'")
			w.Write(page)
		}
		return "/"
	case path == "/healthz":
		if method(http.MethodGet) {
			writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "adapters_loaded": len(s.registry.Loaded()),
				"queued_images": s.batcher.queuedImages(), "inflight_requests": s.inflight.Load()})
		}
		return "/healthz"
	case path == "/metrics":
		if method(http.MethodGet) {
			w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
			s.metrics.write(w, gauges{loaded: len(s.registry.Loaded()), adapterBytes: s.registry.LoadedBytes(),
				queued: s.batcher.queuedImages(), inflight: int(s.inflight.Load()), graphCompiles: s.engine.Compiles()})
		}
		return "/metrics"
	case path == "/v1/adapters":
		if method(http.MethodGet) {
			s.listAdapters(w)
		}
		return "/v1/adapters"
	case strings.HasPrefix(path, "/v1/adapters/"):
		name := strings.TrimPrefix(path, "/v1/adapters/")
		if method(http.MethodGet, http.MethodPut, http.MethodDelete) {
			s.adapterRoute(w, r, name)
		}
		return "/v1/adapters/{name}"
	case path == "/v1/predict":
		if method(http.MethodPost) {
			s.predict(w, r)
		}
		return "/v1/predict"
	}
	writeError(w, http.StatusNotFound, "no route %s", path)
	return "other"
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, map[string]string{"error": fmt.Sprintf(format, args...)})
}

// httpError is an error with the status code it answers.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func errorf(code int, format string, args ...any) error {
	return &httpError{code, fmt.Sprintf(format, args...)}
}

// statusOf maps an error to its status code.
func statusOf(err error) int {
	var he *httpError
	var mbe *http.MaxBytesError
	var ne net.Error
	switch {
	case errors.As(err, &he):
		return he.code
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrWrongBase):
		return http.StatusConflict
	case errors.Is(err, ErrOverloaded), errors.Is(err, errClosed):
		return http.StatusServiceUnavailable
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, os.ErrDeadlineExceeded):
		return http.StatusRequestTimeout
	}
	return http.StatusInternalServerError
}

func (s *Server) fail(w http.ResponseWriter, err error) int {
	code := statusOf(err)
	if code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	if code >= 500 && code != http.StatusServiceUnavailable {
		if st := stackOf(err); st != "" {
			s.log.Error("serve", "err", err, "stack", st)
		} else {
			s.log.Error("serve", "err", err)
		}
	}
	writeError(w, code, "%s", err.Error())
	return code
}

// stackOf is the stack an error carries, for the log (the client gets the
// message only): GoMLX turns a panic inside an execution into an error
// that keeps the panicking frames, printed by its %+v.
func stackOf(err error) string {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if _, ok := e.(fmt.Formatter); ok {
			return fmt.Sprintf("%+v", e)
		}
	}
	return ""
}

// AdapterInfo is one entry of GET /v1/adapters.
type AdapterInfo struct {
	Name       string                `json:"name"`
	Loaded     bool                  `json:"loaded"`
	Version    int                   `json:"version,omitempty"`
	Classes    ClassInfo             `json:"classes"`
	BaseSHA256 string                `json:"base_sha256"`
	BaseOK     bool                  `json:"base_ok"` // bound to this server's base (or unbound)
	ImageSize  int                   `json:"image_size"`
	Preprocess preprocess.Preprocess `json:"preprocess"`
	Bytes      int64                 `json:"bytes"` // on disk ("base": in memory)
	Dataset    string                `json:"dataset,omitempty"`
	Metrics    map[string]any        `json:"metrics"`
	Error      string                `json:"error,omitempty"` // why it cannot be read
}

// ClassInfo is an adapter's classes.
type ClassInfo struct {
	Count int      `json:"count"`
	Names []string `json:"names"`
}

func (s *Server) baseInfo() AdapterInfo {
	m := s.base
	var bytes int64
	for _, k := range s.engine.Base.Net.Params() {
		bytes += 4 * int64(k.NumElements())
	}
	metrics := map[string]any{}
	if a := m.Adapter; a != nil && a.Info.Metrics != nil {
		metrics = a.Info.Metrics
	}
	return AdapterInfo{Name: BaseName, Loaded: true, Version: 1, Classes: ClassInfo{m.NumClasses(), labelsOrEmpty(m.Labels)},
		BaseSHA256: s.engine.Base.SHA256, BaseOK: true, ImageSize: m.Pre.Crop, Preprocess: m.Pre, Bytes: bytes,
		Dataset: s.opts.BaseSource, Metrics: metrics}
}

func labelsOrEmpty(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

// info describes an adapter from its directory's JSON files and sizes.
func (s *Server) info(name string, loaded map[string]int) (AdapterInfo, error) {
	dir, err := s.registry.path(name)
	if err != nil {
		return AdapterInfo{}, err
	}
	v, ok := loaded[name]
	ai := AdapterInfo{Name: name, Loaded: ok, Version: v, Metrics: map[string]any{}, Classes: ClassInfo{Names: []string{}}}
	for _, f := range []string{adapter.ConfigFile, adapter.WeightsFile, adapter.InfoFile} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err == nil {
			ai.Bytes += fi.Size()
		}
	}
	info, err := adapter.ReadInfo(dir)
	if err != nil {
		ai.Error = err.Error()
		return ai, nil
	}
	ai.Classes.Count = info.NumClasses
	if ai.Classes.Count == 0 {
		ai.Classes.Count = s.engine.Base.Net.NumClasses()
	}
	if len(info.ClassNames) == ai.Classes.Count {
		ai.Classes.Names = info.ClassNames
	}
	ai.BaseSHA256 = info.Base.SHA256
	ai.BaseOK = info.Base.SHA256 == "" || info.Base.SHA256 == s.engine.Base.SHA256
	ai.ImageSize, ai.Preprocess, ai.Dataset = info.Preprocess.Crop, info.Preprocess, info.Dataset
	if info.Metrics != nil {
		ai.Metrics = info.Metrics
	}
	return ai, nil
}

func (s *Server) listAdapters(w http.ResponseWriter) {
	names, err := s.registry.Names()
	if err != nil {
		s.fail(w, err)
		return
	}
	loaded := s.registry.Loaded()
	list := []AdapterInfo{s.baseInfo()}
	for _, n := range names {
		if ai, err := s.info(n, loaded); err == nil {
			list = append(list, ai)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"base": map[string]any{"sha256": s.engine.Base.SHA256,
		"arch": s.engine.Base.Net.Describe(), "weights": s.opts.BaseSource}, "adapters": list})
}

func (s *Server) adapterRoute(w http.ResponseWriter, r *http.Request, name string) {
	if name == BaseName {
		if r.Method != http.MethodGet {
			writeError(w, http.StatusBadRequest, "%q is the base model: it cannot be reloaded or unloaded", BaseName)
			return
		}
		writeJSON(w, http.StatusOK, s.baseInfo())
		return
	}
	switch r.Method {
	case http.MethodPut:
		m, err := s.registry.Reload(name)
		if err != nil {
			s.fail(w, err)
			return
		}
		s.registry.Release(m)
	case http.MethodDelete:
		was, err := s.registry.Unload(name)
		if err != nil {
			s.fail(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"name": name, "loaded": false, "was_loaded": was})
		return
	}
	ai, err := s.info(name, s.registry.Loaded())
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ai)
}

// PredictRequest is POST /v1/predict's JSON body.
type PredictRequest struct {
	Adapter string   `json:"adapter"`
	Images  []string `json:"images"` // base64 PNG or JPEG, optionally as data: URLs
	TopK    *int     `json:"top_k"`
}

// PredictResponse is its reply.
type PredictResponse struct {
	Adapter     string             `json:"adapter"`
	Version     int                `json:"version,omitempty"`
	Predictions []Prediction       `json:"predictions"`
	Timing      map[string]float64 `json:"timing_ms"`
}

// Prediction is one image's result.
type Prediction struct {
	Image  string                 `json:"image,omitempty"` // the upload's file name
	Top    []classifier.ClassProb `json:"top"`
	Logits []float32              `json:"logits"`
}

// upload is one image of a request.
type upload struct {
	name string
	data []byte
}

func (s *Server) predict(w http.ResponseWriter, r *http.Request) {
	t0 := time.Now()
	label := "-" // the adapter, once known to exist
	images := 0
	code := http.StatusOK
	defer func() { s.metrics.observePredict(label, code, images, time.Since(t0)) }()
	// The admission token is given back once the logits are in, before the
	// reply is written: a client that sends its next request as soon as it
	// has read this reply must find the token free.
	var once sync.Once
	leave := func() { once.Do(func() { <-s.admit }) }
	select {
	case s.admit <- struct{}{}:
		defer leave()
	default:
		s.metrics.add(&s.metrics.rejected, 1)
		code = s.fail(w, ErrOverloaded)
		return
	}
	s.inflight.Add(1)
	defer s.inflight.Add(-1)

	r.Body = http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes)
	name, ups, topK, err := s.parsePredict(r)
	if err != nil {
		code = s.fail(w, err)
		return
	}
	m, err := s.registry.Acquire(name)
	if err != nil {
		code = s.fail(w, err)
		return
	}
	defer s.registry.Release(m)
	label = m.Name
	tRead := time.Now()
	items := make([]Item, len(ups))
	for i, u := range ups {
		x, err := s.decode(u, m.Pre)
		if err != nil {
			code = s.fail(w, err)
			return
		}
		items[i] = Item{Model: m, X: x}
	}
	tDecode := time.Now()
	j, err := s.batcher.submit(r.Context(), items)
	if err != nil {
		code = s.fail(w, err)
		return
	}
	logits, err := j.wait()
	leave()
	if err != nil && r.Context().Err() != nil {
		code = 499 // nginx's "client closed request": nobody is there to answer
		return
	}
	if err != nil {
		code = s.fail(w, err)
		return
	}
	resp := PredictResponse{Adapter: m.Name, Version: m.Version, Predictions: make([]Prediction, len(ups))}
	for i, l := range logits {
		top, err := classifier.TopClasses(l, topK, m.Labels)
		if err != nil {
			code = s.fail(w, fmt.Errorf("%s: %w", ups[i].name, err))
			return
		}
		resp.Predictions[i] = Prediction{Image: ups[i].name, Top: top, Logits: l}
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	var infer time.Duration
	batchImages, batchAdapters := 0, 0
	for _, st := range j.stats {
		infer += st.Trunk + st.Tails
		batchImages, batchAdapters = max(batchImages, st.Images), max(batchAdapters, st.Adapters)
	}
	resp.Timing = map[string]float64{
		"read":           ms(tRead.Sub(t0)),
		"decode":         ms(tDecode.Sub(tRead)),
		"queue":          ms(j.started.Sub(tDecode)),
		"inference":      ms(infer),
		"total":          ms(time.Since(t0)),
		"batches":        float64(len(j.stats)),
		"batch_images":   float64(batchImages),
		"batch_adapters": float64(batchAdapters),
	}
	images = len(ups)
	writeJSON(w, http.StatusOK, resp)
}

// parsePredict reads a multipart form (image parts, adapter, top_k) or a
// JSON PredictRequest.
func (s *Server) parsePredict(r *http.Request) (name string, ups []upload, topK int, err error) {
	ct, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		return "", nil, 0, errorf(http.StatusUnsupportedMediaType, "Content-Type %q: want multipart/form-data or application/json", r.Header.Get("Content-Type"))
	}
	topK = 5
	topText := ""
	switch ct {
	case "multipart/form-data":
		if params["boundary"] == "" {
			return "", nil, 0, errorf(http.StatusBadRequest, "multipart body without a boundary")
		}
		mr, err := r.MultipartReader()
		if err != nil {
			return "", nil, 0, errorf(http.StatusBadRequest, "malformed multipart body: %v", err)
		}
		for {
			p, err := mr.NextPart()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return "", nil, 0, bodyError("malformed multipart body", err)
			}
			field := p.FormName()
			switch {
			case field == "adapter" || field == "top_k":
				v, err := io.ReadAll(io.LimitReader(p, 1<<10+1))
				if err != nil {
					return "", nil, 0, bodyError("malformed multipart body", err)
				}
				if len(v) > 1<<10 {
					return "", nil, 0, errorf(http.StatusBadRequest, "form field %s: over 1 KiB", field)
				}
				if field == "adapter" {
					name = strings.TrimSpace(string(v))
				} else {
					topText = strings.TrimSpace(string(v))
				}
			case field == "image" || field == "images" || field == "file" || p.FileName() != "":
				if len(ups) == s.opts.MaxImages {
					return "", nil, 0, errorf(http.StatusBadRequest, "more than %d images in one request", s.opts.MaxImages)
				}
				data, err := io.ReadAll(p)
				if err != nil {
					return "", nil, 0, bodyError("malformed multipart body", err)
				}
				n := p.FileName()
				if n == "" {
					n = fmt.Sprintf("image %d", len(ups)+1)
				}
				ups = append(ups, upload{name: n, data: data})
			default:
				if _, err := io.Copy(io.Discard, p); err != nil {
					return "", nil, 0, bodyError("malformed multipart body", err)
				}
			}
		}
	case "application/json":
		var req PredictRequest
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return "", nil, 0, bodyError("malformed JSON body", err)
		}
		if dec.More() {
			return "", nil, 0, errorf(http.StatusBadRequest, "malformed JSON body: more than one value")
		}
		if len(req.Images) > s.opts.MaxImages {
			return "", nil, 0, errorf(http.StatusBadRequest, "more than %d images in one request", s.opts.MaxImages)
		}
		name = req.Adapter
		if req.TopK != nil {
			topText = strconv.Itoa(*req.TopK)
		}
		for i, b64 := range req.Images {
			if _, data, ok := strings.Cut(b64, ";base64,"); ok && strings.HasPrefix(b64, "data:") {
				b64 = data
			}
			data, err := base64.StdEncoding.DecodeString(b64)
			if err != nil {
				if data, err = base64.RawStdEncoding.DecodeString(b64); err != nil {
					return "", nil, 0, errorf(http.StatusBadRequest, "images[%d]: not base64: %v", i, err)
				}
			}
			ups = append(ups, upload{name: fmt.Sprintf("images[%d]", i), data: data})
		}
	default:
		return "", nil, 0, errorf(http.StatusUnsupportedMediaType, "Content-Type %q: want multipart/form-data or application/json", ct)
	}
	if len(ups) == 0 {
		return "", nil, 0, errorf(http.StatusBadRequest, "no image: send a PNG or JPEG as a form file named image, or base64 in \"images\"")
	}
	if topText != "" {
		k, err := strconv.Atoi(topText)
		if err != nil || k < 1 || k > s.opts.MaxTopK {
			return "", nil, 0, errorf(http.StatusBadRequest, "top_k %q: want an integer from 1 to %d", topText, s.opts.MaxTopK)
		}
		topK = k
	}
	return name, ups, topK, nil
}

// bodyError keeps the status of a body that was too large or too slow
// (413, 408) and calls anything else malformed (400).
func bodyError(what string, err error) error {
	switch statusOf(err) {
	case http.StatusRequestEntityTooLarge:
		return err
	case http.StatusRequestTimeout:
		return errorf(http.StatusRequestTimeout, "the request body did not arrive in time (%v)", err)
	}
	return errorf(http.StatusBadRequest, "%s: %v", what, err)
}

// decode checks an upload's header against the pixel limits before
// decoding it, then preprocesses it for a model.
func (s *Server) decode(u upload, pre preprocess.Preprocess) ([]float32, error) {
	cfg, err := limits.ImageConfigBytes(u.data, u.name)
	var over *limits.ExceededError
	if errors.As(err, &over) {
		return nil, errorf(http.StatusRequestEntityTooLarge, "%v", err)
	}
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "%v", err)
	}
	if px := int64(cfg.Width) * int64(cfg.Height); px > s.opts.MaxImagePixels {
		return nil, errorf(http.StatusRequestEntityTooLarge, "%s: %d×%d image: over this server's limit of %d pixels", u.name, cfg.Width, cfg.Height, s.opts.MaxImagePixels)
	}
	img, err := limits.DecodeImageBytes(u.data, u.name)
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "%v", err)
	}
	return pre.Apply(img), nil
}
