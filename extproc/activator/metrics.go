package activator

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	held        *prometheus.GaugeVec
	released    *prometheus.CounterVec
	rejected    *prometheus.CounterVec
	canceled    *prometheus.CounterVec
	wakes       *prometheus.CounterVec
	wakeErrors  *prometheus.CounterVec
	heldSeconds prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	labels := []string{"environment", "route"}
	m := &metrics{
		held: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nemesis_activator_held_requests",
			Help: "Requests held now for a route without a ready endpoint.",
		}, labels),
		released: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nemesis_activator_released_total",
			Help: "Held requests let through once their route was ready.",
		}, labels),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nemesis_activator_rejected_total",
			Help: "Requests answered 503 by the activator, by reason: hold_timeout, queue_full, invalid_metadata.",
		}, append(labels, "reason")),
		canceled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nemesis_activator_canceled_total",
			Help: "Held requests whose client or Envoy went away before the route was ready.",
		}, labels),
		wakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nemesis_activator_wakes_total",
			Help: "Activation stamps written on CustomAutoscalers (the first, then one per renew interval while requests are held).",
		}, labels),
		wakeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nemesis_activator_wake_errors_total",
			Help: "Activation stamps that failed; they are retried.",
		}, labels),
		heldSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "nemesis_activator_hold_duration_seconds",
			Help:    "How long released requests were held.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 15),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.held, m.released, m.rejected, m.canceled, m.wakes, m.wakeErrors, m.heldSeconds)
	}
	return m
}
