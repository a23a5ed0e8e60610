// Package proxy is the sidecar's reverse proxy to the model on localhost. It
// passes HTTP/1.1, h2c (gRPC) and streamed responses through unbuffered and
// times and counts every request, for Prometheus and for the samples the
// sidecar pushes.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Protocols the proxy may speak to the model.
const (
	// ProtocolAuto speaks to the model as the client spoke to the sidecar:
	// HTTP/2 (h2c) for HTTP/2 clients such as gRPC, HTTP/1.1 otherwise.
	ProtocolAuto  = "auto"
	ProtocolHTTP1 = "http1"
	ProtocolH2C   = "h2c"
)

// Config says where the model listens and how to reach it.
type Config struct {
	// Model is the model's base URL, e.g. http://127.0.0.1:8080.
	Model    *url.URL
	Protocol string
	// DialTimeout bounds connecting to the model. Responses have no
	// timeout here: inference can take minutes, and Envoy's route timeout
	// (the environment's timeout_seconds) is what bounds a request.
	DialTimeout time.Duration
	Log         *slog.Logger
	Registerer  prometheus.Registerer
}

// Window is what the proxy saw since the previous Take.
type Window struct {
	// Requests is how many requests completed.
	Requests int
	// Errors is how many of them failed: 5xx answers, and the model
	// being unreachable.
	Errors int
	// ResponseTime is the sum of their times to last byte.
	ResponseTime time.Duration
	// InFlight is how many requests are open now.
	InFlight int
}

// Proxy is an http.Handler that forwards to the model.
type Proxy struct {
	log     *slog.Logger
	http1   *httputil.ReverseProxy
	h2c     *httputil.ReverseProxy
	pick    string
	metrics metrics

	inFlight atomic.Int64
	mu       sync.Mutex
	window   Window
}

type metrics struct {
	requests       *prometheus.CounterVec
	duration       prometheus.Histogram
	firstByte      prometheus.Histogram
	upstreamErrors prometheus.Counter
}

// latencyBuckets reach from a fast CPU model's milliseconds to an LLM
// stream's minutes.
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// New returns a proxy to cfg.Model and registers its metrics.
func New(cfg Config) (*Proxy, error) {
	if cfg.Model == nil || cfg.Model.Scheme != "http" || cfg.Model.Host == "" {
		return nil, fmt.Errorf("model URL %v: want http://host:port", cfg.Model)
	}
	switch cfg.Protocol {
	case ProtocolAuto, ProtocolHTTP1, ProtocolH2C:
	case "":
		cfg.Protocol = ProtocolAuto
	default:
		return nil, fmt.Errorf("unknown model protocol %q: want auto, http1 or h2c", cfg.Protocol)
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	p := &Proxy{log: cfg.Log, pick: cfg.Protocol}
	p.metrics = metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nemesis_sidecar_requests_total",
			Help: "Requests proxied to the model, by response status code.",
		}, []string{"code"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "nemesis_sidecar_request_duration_seconds",
			Help:    "Time from a request's arrival to its response's last byte.",
			Buckets: latencyBuckets,
		}),
		firstByte: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "nemesis_sidecar_time_to_first_byte_seconds",
			Help:    "Time from a request's arrival to its response's first body byte (or its headers, for an empty body).",
			Buckets: latencyBuckets,
		}),
		upstreamErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nemesis_sidecar_upstream_errors_total",
			Help: "Requests that failed because the model could not be reached or broke off its answer.",
		}),
	}
	if cfg.Registerer != nil {
		inFlight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "nemesis_sidecar_requests_in_flight",
			Help: "Requests being proxied now.",
		}, func() float64 { return float64(p.inFlight.Load()) })
		for _, c := range []prometheus.Collector{p.metrics.requests, p.metrics.duration, p.metrics.firstByte, p.metrics.upstreamErrors, inFlight} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("registering proxy metrics: %w", err)
			}
		}
	}
	dialer := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	p.http1 = p.reverseProxy(cfg.Model, &http.Transport{
		DialContext: dialer.DialContext,
		// Clients of one pod come through a handful of Envoys; keep a
		// connection per concurrent request instead of re-dialing.
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		// The body must reach the client as the model encoded it: no
		// transparent gzip.
		DisableCompression: true,
	})
	h2c := new(http.Protocols)
	h2c.SetUnencryptedHTTP2(true)
	p.h2c = p.reverseProxy(cfg.Model, &http.Transport{
		DialContext:        dialer.DialContext,
		Protocols:          h2c,
		IdleConnTimeout:    90 * time.Second,
		DisableCompression: true,
	})
	return p, nil
}

func (p *Proxy) reverseProxy(model *url.URL, transport http.RoundTripper) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(model)
			// The model sees the Host the client asked for, as if no
			// sidecar stood in between.
			r.Out.Host = r.In.Host
			r.SetXForwarded()
		},
		Transport: transport,
		// Without a pool the reverse proxy allocates a 32 KiB buffer for
		// every response it copies: the garbage was a good part of the
		// hop's cost.
		BufferPool: copyBuffers,
		// 0 is not "never": the reverse proxy flushes every write at once
		// for server-sent events and for every body of unknown length
		// (chunked token streams, gRPC), and leaves bodies of known length
		// to the server's buffer. -1 would flush those too, and its
		// first, timer-driven flush races the end of a gRPC trailers-only
		// answer (an error status): the headers go out without
		// END_STREAM and the client reports "server closed the stream
		// without sending trailers".
		FlushInterval: 0,
		ErrorLog:      slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
		ErrorHandler:  p.upstreamError,
	}
}

// copyBuffers are the reverse proxies' body buffers.
var copyBuffers = &bufferPool{pool: sync.Pool{New: func() any { return new([32 << 10]byte) }}}

type bufferPool struct{ pool sync.Pool }

func (b *bufferPool) Get() []byte { return b.pool.Get().(*[32 << 10]byte)[:] }

func (b *bufferPool) Put(p []byte) {
	if len(p) == 32<<10 {
		b.pool.Put((*[32 << 10]byte)(p))
	}
}

func (p *Proxy) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		// The client left; nobody will read an answer.
		p.log.Debug("client went away", "method", r.Method, "path", r.URL.Path, "err", err)
		w.WriteHeader(499) // nginx's "client closed request", for the metrics
		return
	}
	p.metrics.upstreamErrors.Inc()
	p.log.Warn("proxying to model failed", "method", r.Method, "path", r.URL.Path, "err", err)
	if errors.Is(err, context.DeadlineExceeded) {
		w.WriteHeader(http.StatusGatewayTimeout)
		return
	}
	w.WriteHeader(http.StatusBadGateway)
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	p.inFlight.Add(1)
	tw := &timedWriter{ResponseWriter: w, start: start}
	defer func() {
		p.inFlight.Add(-1)
		// The reverse proxy aborts the handler with a panic when the model
		// breaks off an answer it has begun; net/http recovers it.
		aborted := recover()
		p.done(tw, time.Since(start), aborted != nil)
		if aborted != nil {
			panic(aborted)
		}
	}()
	if r.ProtoMajor == 1 {
		// A model may answer before it has read the whole request (a
		// token stream starts at once; a model echoes an upload as it
		// reads it). Without full duplex, Go's HTTP/1.1 server reads away
		// what is left of the request body when the answer's headers are
		// written, racing the transport that forwards that body to the
		// model: the transport then drops its connection and the answer
		// breaks off.
		_ = http.NewResponseController(w).EnableFullDuplex()
	}
	if p.pick == ProtocolH2C || (p.pick == ProtocolAuto && r.ProtoMajor == 2) {
		p.h2c.ServeHTTP(tw, r)
		return
	}
	p.http1.ServeHTTP(tw, r)
}

func (p *Proxy) done(tw *timedWriter, elapsed time.Duration, aborted bool) {
	status := tw.status
	if status == 0 {
		// The handler wrote nothing: net/http answers 200.
		status = http.StatusOK
	}
	firstByte := tw.firstByte
	if firstByte == 0 {
		firstByte = tw.headers
	}
	if firstByte == 0 {
		firstByte = elapsed
	}
	if aborted {
		p.metrics.upstreamErrors.Inc()
	}
	p.metrics.requests.WithLabelValues(strconv.Itoa(status)).Inc()
	p.metrics.duration.Observe(elapsed.Seconds())
	p.metrics.firstByte.Observe(firstByte.Seconds())
	p.mu.Lock()
	p.window.Requests++
	p.window.ResponseTime += elapsed
	if aborted || (status >= 500 && status != 499) {
		p.window.Errors++
	}
	p.mu.Unlock()
}

// Take returns what completed since the previous Take and starts a new window.
func (p *Proxy) Take() Window {
	p.mu.Lock()
	w := p.window
	p.window = Window{}
	p.mu.Unlock()
	w.InFlight = p.InFlight()
	return w
}

// NewServer returns the server of the pod port: HTTP/1.1 and HTTP/2 without
// TLS (h2c, prior knowledge, as gRPC clients and Envoy speak it). Only
// headers have a read deadline: bodies and streams may take as long as the
// model does.
func NewServer(h http.Handler, log *slog.Logger) *http.Server {
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           h,
		Protocols:         protocols,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// InFlight is how many requests are being proxied now.
func (p *Proxy) InFlight() int { return int(p.inFlight.Load()) }

// timedWriter notes a response's status and when its headers and first
// body byte left. Unwrap lets http.ResponseController reach the connection's
// Flush and Hijack, which the reverse proxy uses for streams and upgrades.
type timedWriter struct {
	http.ResponseWriter
	start     time.Time
	status    int
	headers   time.Duration
	firstByte time.Duration
}

func (w *timedWriter) WriteHeader(code int) {
	// 1xx answers (100 Continue, 103 Early Hints) precede the real one.
	if w.status == 0 && code >= 200 {
		w.status = code
		w.headers = time.Since(w.start)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *timedWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
		w.headers = time.Since(w.start)
	}
	if w.firstByte == 0 && len(b) > 0 {
		w.firstByte = time.Since(w.start)
	}
	return w.ResponseWriter.Write(b)
}

func (w *timedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
