package activator

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	held        *prometheus.GaugeVec
	released    *prometheus.CounterVec
	rejected    *prometheus.CounterVec
	canceled    *prometheus.CounterVec
	wakes       *prometheus.CounterVec
	wakeErrors  *prometheus.CounterVec
	heldSeconds *prometheus.HistogramVec
	coldStart   *prometheus.HistogramVec
	stage       *prometheus.HistogramVec
}

// initRoute creates a route's counters at zero, so that their first
// increase shows in rate() and alerts on them have a series to read.
func (m *metrics) initRoute(key routeKey) {
	env, route := key.environment, key.name
	for _, reason := range []string{reasonTimeout, reasonQueueFull} {
		m.rejected.WithLabelValues(env, route, reason)
	}
	for _, c := range []*prometheus.CounterVec{m.released, m.canceled, m.wakes, m.wakeErrors} {
		c.WithLabelValues(env, route)
	}
}

// Stages of nemesis_activator_cold_start_stage_duration_seconds.
const (
	// stageWake is from the first held request to the target told to wake
	// (the activation stamp written).
	stageWake = "wake"
	// stageReady is from then to every Envoy of the environment having
	// ACKed an endpoint for the route: the controller's scale, the pod's
	// start-up and readiness, and the xDS push.
	stageReady = "ready"
	// stageRelease is from then to the last held request let through.
	stageRelease = "release"
)

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
			Help: "Requests answered 503 by the activator, by reason: hold_timeout, queue_full, refused.",
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
		heldSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nemesis_activator_hold_duration_seconds",
			Help:    "How long released requests were held.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 15),
		}, labels),
		coldStart: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nemesis_activator_cold_start_duration_seconds",
			Help:    "Wakes from zero, from the first held request to the held requests let through.",
			Buckets: prometheus.ExponentialBuckets(0.25, 2, 12),
		}, labels),
		stage: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nemesis_activator_cold_start_stage_duration_seconds",
			Help:    "Each stage of a wake from zero: wake (first held request to the target told), ready (to an endpoint ACKed by every Envoy), release (to the held requests let through).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 18),
		}, append(labels, "stage")),
	}
	if reg != nil {
		reg.MustRegister(m.held, m.released, m.rejected, m.canceled, m.wakes, m.wakeErrors, m.heldSeconds, m.coldStart, m.stage)
	}
	return m
}
