package podtraffic

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nemesis-ml/nemesis/controller/podmetric"
)

// Appender stores samples (the controller's Redis store).
type Appender interface {
	Append(ctx context.Context, samples []podmetric.Sample) error
}

// Flusher stores the aggregator's samples every interval.
type Flusher struct {
	agg      *Aggregator
	store    Appender
	interval time.Duration
	log      *slog.Logger
	failing  bool

	stored, failed, unknown prometheus.Counter
	beforePod               *prometheus.CounterVec
}

// NewFlusher returns a flusher of agg into store every interval.
func NewFlusher(agg *Aggregator, store Appender, interval time.Duration, reg prometheus.Registerer, log *slog.Logger) *Flusher {
	f := &Flusher{
		agg: agg, store: store, interval: interval, log: log,
		stored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nemesis_pod_traffic_samples_total",
			Help: "Pod samples taken from Envoy's access logs and stored.",
		}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nemesis_pod_traffic_samples_failed_total",
			Help: "Pod samples taken from Envoy's access logs that Redis did not store (dropped: the next interval's follow).",
		}),
		unknown: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nemesis_pod_traffic_unknown_upstream_total",
			Help: "Logged requests to an upstream address that is no pod of a route (one removed since, or not a pod), left out of pod samples.",
		}),
		beforePod: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nemesis_route_requests_failed_before_pod_total",
			Help: "Logged requests that failed before Envoy sent them to any pod (no route, no healthy pod, connection failure), by route: errors of the route, in no pod's samples.",
		}, []string{"route"}),
	}
	reg.MustRegister(f.stored, f.failed, f.unknown, f.beforePod)
	return f
}

// Run flushes every interval, on whole multiples of it, until ctx ends:
// replicas of serve stamp the same seconds, which the controller adds up.
func (f *Flusher) Run(ctx context.Context) {
	last := time.Now()
	for {
		next := time.Now().Truncate(f.interval).Add(f.interval)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
		now := time.Now()
		samples, counts := f.agg.Flush(next.UTC(), now.Sub(last))
		last = now
		f.unknown.Add(float64(counts.Unknown))
		for route, n := range counts.BeforePod {
			f.beforePod.WithLabelValues(route).Add(float64(n))
		}
		if len(samples) == 0 {
			continue
		}
		if err := f.store.Append(ctx, samples); err != nil {
			f.failed.Add(float64(len(samples)))
			if !f.failing {
				f.log.Warn("storing pod samples from the access logs failed, dropping them until it works", "samples", len(samples), "err", err)
				f.failing = true
			}
			continue
		}
		if f.failing {
			f.log.Info("storing pod samples from the access logs works again")
			f.failing = false
		}
		f.stored.Add(float64(len(samples)))
	}
}
