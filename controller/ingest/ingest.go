// Package ingest serves POST /metrics: it validates the samples that the
// sidecars push and stores them, all or none, in one Redis pipeline.
package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	kvalidation "k8s.io/apimachinery/pkg/util/validation"

	"github.com/nemesis-ml/nemesis/controller/podmetric"
	"github.com/nemesis-ml/nemesis/internal/httpjson"
	"github.com/nemesis-ml/nemesis/internal/validation"
)

// MaxBody is the largest request body accepted.
const MaxBody = 1 << 20

// DefaultSkew is how far in the future a sample's receivedAt may be, for
// sidecars whose clocks run a little ahead.
const DefaultSkew = 5 * time.Second

// Appender stores a validated batch.
type Appender interface {
	Append(ctx context.Context, samples []podmetric.Sample) error
}

// Options configure the handler.
type Options struct {
	// Skew is how far ahead of the server's clock receivedAt may be;
	// DefaultSkew when zero.
	Skew time.Duration
	// Registerer receives the handler's metrics; none when nil.
	Registerer prometheus.Registerer
	Log        *slog.Logger
}

// Handler serves POST /metrics.
type Handler struct {
	store    Appender
	skew     time.Duration
	log      *slog.Logger
	now      func() time.Time
	samples  prometheus.Counter
	requests *prometheus.CounterVec
}

// New returns the handler.
func New(store Appender, opts Options) *Handler {
	h := &Handler{
		store: store, skew: opts.Skew, log: opts.Log, now: time.Now,
		samples: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nemesis_ingest_samples_total", Help: "Pod samples stored by POST /metrics.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nemesis_ingest_requests_total", Help: "POST /metrics requests by response code.",
		}, []string{"code"}),
	}
	if h.skew == 0 {
		h.skew = DefaultSkew
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(h.samples, h.requests)
	}
	return h
}

// Largest values a sample may carry: physical bounds well past any one pod,
// so that no sum or mean of samples overflows and every value can be
// written into a CustomAutoscaler's status.
const (
	MaxCPUMillicores    = 1_000_000        // 1,000 cores
	MaxMemoryMiB        = 16 << 20         // 16 TiB
	MaxDiskMiB          = 1 << 30          // 1 PiB
	MaxResponseTimeMS   = 24 * 3600 * 1000 // a day
	MaxRequestCount     = 1e9
	MaxRequestRate      = 1e7 // per second
	MaxInFlightRequests = 1e7
)

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	code, stored, err := h.serve(r)
	h.requests.WithLabelValues(strconv.Itoa(code)).Inc()
	switch code {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="nemesis"`)
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "1")
	}
	if err != nil {
		httpjson.WriteError(w, code, err.Field, err.Message)
		return
	}
	httpjson.Write(w, code, map[string]int{"stored": stored})
}

func (h *Handler) serve(r *http.Request) (int, int, *validation.FieldError) {
	raw, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, MaxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return http.StatusRequestEntityTooLarge, 0, validation.Errorf("", "body larger than %d bytes", MaxBody)
		}
		return http.StatusBadRequest, 0, validation.Errorf("", "reading body: %v", err)
	}
	samples, err := h.decode(raw)
	if err != nil {
		h.log.Info("refused samples", "remote", r.RemoteAddr, "body", string(raw[:min(len(raw), 512)]), "err", err)
		var fe *validation.FieldError
		if errors.As(err, &fe) {
			return http.StatusBadRequest, 0, fe
		}
		return http.StatusBadRequest, 0, validation.Errorf("", "%v", err)
	}
	if err := h.store.Append(r.Context(), samples); err != nil {
		h.log.Error("storing samples", "samples", len(samples), "err", err)
		return http.StatusServiceUnavailable, 0, validation.Errorf("", "samples not stored: %v", err)
	}
	h.samples.Add(float64(len(samples)))
	return http.StatusOK, len(samples), nil
}

// decode parses one sample or an array of them and validates each; the
// first invalid one fails the whole batch.
func (h *Handler) decode(raw []byte) ([]podmetric.Sample, error) {
	raw = bytes.TrimSpace(raw)
	now := h.now()
	var shape any = &podmetric.Sample{}
	if len(raw) > 0 && raw[0] == '[' {
		shape = &[]podmetric.Sample{}
	}
	// Trailing data, duplicate keys and keys that match a field only
	// case-insensitively are refused before encoding/json, which allows them.
	if err := httpjson.Check(raw, shape); err != nil {
		return nil, err
	}
	if len(raw) > 0 && raw[0] == '[' {
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, fmt.Errorf("body is not a JSON array of samples: %w", err)
		}
		if len(items) == 0 {
			return nil, &validation.FieldError{Message: "empty array: send at least one sample"}
		}
		samples := make([]podmetric.Sample, len(items))
		for i, item := range items {
			if err := h.decodeOne(item, &samples[i], now, fmt.Sprintf("[%d].", i)); err != nil {
				return nil, err
			}
		}
		return samples, nil
	}
	var s podmetric.Sample
	if err := h.decodeOne(raw, &s, now, ""); err != nil {
		return nil, err
	}
	return []podmetric.Sample{s}, nil
}

func (h *Handler) decodeOne(raw []byte, s *podmetric.Sample, now time.Time, prefix string) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(s); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return &validation.FieldError{Field: prefix + typeErr.Field, Message: fmt.Sprintf("must be a %s", typeErr.Type)}
		}
		if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return &validation.FieldError{Field: prefix + strings.Trim(name, `"`), Message: "unknown field"}
		}
		var parseErr *time.ParseError
		if errors.As(err, &parseErr) {
			return &validation.FieldError{Field: prefix + "receivedAt", Message: "must be an RFC 3339 time"}
		}
		return &validation.FieldError{Field: strings.TrimSuffix(prefix, "."), Message: "not a JSON sample: " + err.Error()}
	}
	if field := nullField(raw); field != "" {
		return &validation.FieldError{Field: prefix + field, Message: "must not be null; leave it out instead"}
	}
	if err := h.validate(s, now); err != nil {
		err.Field = prefix + err.Field
		return err
	}
	return nil
}

// nullField names the first field (by name) of a sample object that is
// null, or returns "". encoding/json skips a null, which would read as 0 or
// as "stamp it now" where the sender may have meant something else.
func nullField(raw []byte) string {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return ""
	}
	for _, name := range slices.Sorted(maps.Keys(fields)) {
		if string(fields[name]) == "null" {
			return name
		}
	}
	return ""
}

func (h *Handler) validate(s *podmetric.Sample, now time.Time) *validation.FieldError {
	if err := validID(s.ID); err != "" {
		return &validation.FieldError{Field: "id", Message: err}
	}
	for _, v := range []struct {
		name       string
		value, max float64
		unit       string
	}{
		{"cpuUsage", s.CPUUsage, MaxCPUMillicores, "millicores"},
		{"memoryUsage", s.MemoryUsage, MaxMemoryMiB, "MiB"},
		{"diskUsage", s.DiskUsage, MaxDiskMiB, "MiB"},
		{"averageResponseTime", s.AverageResponseTime, MaxResponseTimeMS, "ms"},
		{"requestCount", s.RequestCount, MaxRequestCount, "requests"},
		{"requestRate", s.RequestRate, MaxRequestRate, "requests/s"},
		{"inFlightRequests", s.InFlightRequests, MaxInFlightRequests, "requests"},
		{"errorCount", s.ErrorCount, MaxRequestCount, "requests"},
		{"p95ResponseTime", s.P95ResponseTime, MaxResponseTimeMS, "ms"},
	} {
		if math.IsNaN(v.value) || v.value < 0 || v.value > v.max {
			return &validation.FieldError{Field: v.name, Message: fmt.Sprintf("must be a number from 0 to %g %s, got %v", v.max, v.unit, v.value)}
		}
	}
	switch s.Source {
	case podmetric.SourceAll, podmetric.SourceProxy, podmetric.SourceMeter:
	case podmetric.SourceEnvoy:
		// Samples from Envoy's logs add up per second; one pushed by a pod
		// would add to its real traffic.
		return &validation.FieldError{Field: "source", Message: `"envoy" is serve's own reading of Envoy's access logs; a sidecar sends "proxy" or "meter"`}
	default:
		return &validation.FieldError{Field: "source", Message: fmt.Sprintf(`%q: must be "proxy", "meter" or left out`, s.Source)}
	}
	switch {
	case s.ReceivedAt.IsZero():
		s.ReceivedAt = now
	case s.ReceivedAt.After(now.Add(h.skew)):
		return &validation.FieldError{Field: "receivedAt", Message: fmt.Sprintf("%s is more than %s ahead of the server's clock", s.ReceivedAt.Format(time.RFC3339Nano), h.skew)}
	}
	return nil
}

// validID checks that id is namespace/pod with Kubernetes names.
func validID(id string) string {
	ns, pod, ok := strings.Cut(id, "/")
	if !ok {
		return fmt.Sprintf("%q must be namespace/pod", id)
	}
	if errs := kvalidation.IsDNS1123Label(ns); len(errs) > 0 {
		return fmt.Sprintf("namespace %q: %s", ns, strings.Join(errs, "; "))
	}
	if errs := kvalidation.IsDNS1123Subdomain(pod); len(errs) > 0 {
		return fmt.Sprintf("pod %q: %s", pod, strings.Join(errs, "; "))
	}
	return ""
}
