package reconciler

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	desired   *prometheus.GaugeVec
	decisions *prometheus.CounterVec
	latency   prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		desired: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nemesis_autoscaler_desired_replicas",
			Help: "Replica count the last decision asked for.",
		}, []string{"namespace", "name"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nemesis_autoscaler_decisions_total",
			Help: "Rule evaluations by the action they chose (HOLD keeps the count).",
		}, []string{"namespace", "name", "action"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "nemesis_autoscaler_decision_duration_seconds",
			Help:    "Time from the start of a reconcile to its decision applied: samples read, rules evaluated, status and scale written.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.desired, m.decisions, m.latency)
	}
	return m
}
