package reconciler

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/controller/rules"
)

// Reasons of nemesis_autoscaler_reconcile_errors_total.
const (
	errGetScale     = "get_scale"
	errSelector     = "invalid_selector"
	errListPods     = "list_pods"
	errRedis        = "redis"
	errUpdateScale  = "update_scale"
	errUpdateStatus = "update_status"
)

var errReasons = []string{errGetScale, errSelector, errListPods, errRedis, errUpdateScale, errUpdateStatus}

// metrics are the controller's series; every one but the latency histogram
// is labelled with the CustomAutoscaler's namespace and name, and removed
// when it is deleted. Rule and metric labels come from the autoscaler's
// spec, so their number is bounded by what operators write.
type metrics struct {
	desired, current, ready, min, max *prometheus.GaugeVec
	reportingPods, newestSample       *prometheus.GaugeVec
	value, threshold                  *prometheus.GaugeVec
	decisions, scales, errors         *prometheus.CounterVec
	latency                           prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	ca := []string{"namespace", "name"}
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, append(ca, labels...))
	}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, append(ca, labels...))
	}
	m := &metrics{
		desired: gauge("nemesis_autoscaler_desired_replicas", "Replica count the last decision asked for."),
		current: gauge("nemesis_autoscaler_current_replicas", "The target's replica count (its scale's spec.replicas) at the last evaluation."),
		ready:   gauge("nemesis_autoscaler_ready_replicas", "The target's ready pods at the last evaluation."),
		min:     gauge("nemesis_autoscaler_min_replicas", "The autoscaler's minReplicas."),
		max:     gauge("nemesis_autoscaler_max_replicas", "The autoscaler's maxReplicas."),
		reportingPods: gauge("nemesis_autoscaler_reporting_pods",
			"Ready pods with a sample within the autoscaler's longest rule window."),
		newestSample: gauge("nemesis_autoscaler_newest_sample_timestamp_seconds",
			"Unix time of the newest sample of the target's ready pods (time() minus it is its age)."),
		value: gauge("nemesis_autoscaler_metric_value",
			"A rule's aggregate of a metric over its window, in the metric's unit (millicores, MiB, milliseconds, requests per second, requests); absent while no pod reports.",
			"rule", "metric"),
		threshold: gauge("nemesis_autoscaler_threshold",
			"A rule's threshold on a metric, in the metric's unit.", "rule", "metric", "operator"),
		decisions: counter("nemesis_autoscaler_decisions_total",
			"Rule evaluations by the action they chose and the rule that chose it (HOLD keeps the count; rule is empty when none decided).",
			"action", "rule"),
		scales: counter("nemesis_autoscaler_scales_total",
			"Changes of the target's replica count made by the controller, by action and rule.", "action", "rule"),
		errors: counter("nemesis_autoscaler_reconcile_errors_total",
			"Evaluations that could not decide or apply a decision, by reason: get_scale, invalid_selector, list_pods, redis, update_scale, update_status.",
			"reason"),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "nemesis_autoscaler_decision_duration_seconds",
			Help:    "Time from the start of a reconcile to its decision applied: samples read, rules evaluated, status and scale written.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.desired, m.current, m.ready, m.min, m.max, m.reportingPods, m.newestSample,
			m.value, m.threshold, m.decisions, m.scales, m.errors, m.latency)
	}
	return m
}

// observe records what one evaluation saw and decided.
func (m *metrics) observe(ca *v1alpha1.CustomAutoscaler, obs observation, aggregates map[string]rules.Aggregate, d rules.Decision) {
	ns, name := ca.Namespace, ca.Name
	m.decisions.WithLabelValues(ns, name, d.Action, d.Rule).Inc()
	m.desired.WithLabelValues(ns, name).Set(float64(d.To))
	m.current.WithLabelValues(ns, name).Set(float64(obs.scale.Spec.Replicas))
	m.ready.WithLabelValues(ns, name).Set(float64(len(obs.readyPods)))
	m.min.WithLabelValues(ns, name).Set(float64(ca.Spec.MinReplicas))
	m.max.WithLabelValues(ns, name).Set(float64(ca.Spec.MaxReplicas))
	// At zero, so that rate() and increase() see the first: the errors,
	// and the scales each rule, a wake and the min/max bounds (no rule)
	// can make.
	for _, reason := range errReasons {
		m.errors.WithLabelValues(ns, name, reason)
	}
	for _, rule := range ca.Spec.Rules {
		m.scales.WithLabelValues(ns, name, string(rule.Action), rule.ID)
	}
	increase, decrease := string(v1alpha1.ActionIncreaseInstances), string(v1alpha1.ActionDecreaseInstances)
	if ca.Spec.MinReplicas == 0 {
		m.scales.WithLabelValues(ns, name, increase, v1alpha1.ActivationRule)
	}
	m.scales.WithLabelValues(ns, name, increase, "")
	m.scales.WithLabelValues(ns, name, decrease, "")

	reporting, newest := 0, time.Time{}
	for _, pod := range obs.readyPods {
		samples := obs.samples[pod]
		if len(samples) > 0 {
			reporting++
		}
		for _, s := range samples {
			if s.ReceivedAt.After(newest) {
				newest = s.ReceivedAt
			}
		}
	}
	m.reportingPods.WithLabelValues(ns, name).Set(float64(reporting))
	if !newest.IsZero() {
		m.newestSample.WithLabelValues(ns, name).Set(float64(newest.UnixNano()) / 1e9)
	}

	// Rules and thresholds may have changed since the last evaluation:
	// rewrite this autoscaler's series rather than leave stale ones.
	own := prometheus.Labels{"namespace": ns, "name": name}
	m.value.DeletePartialMatch(own)
	m.threshold.DeletePartialMatch(own)
	for _, rule := range ca.Spec.Rules {
		agg := aggregates[rule.ID]
		for _, t := range rule.Thresholds {
			metric := string(t.MetricType)
			m.threshold.WithLabelValues(ns, name, rule.ID, metric, string(t.Operator)).Set(t.Value)
			if v, ok := agg.Values[t.MetricType]; ok {
				m.value.WithLabelValues(ns, name, rule.ID, metric).Set(v)
			}
		}
	}
}

// scaled counts a change of the target's replica count.
func (m *metrics) scaled(ca *v1alpha1.CustomAutoscaler, d rules.Decision) {
	m.scales.WithLabelValues(ca.Namespace, ca.Name, d.Action, d.Rule).Inc()
}

// failed counts an evaluation that could not decide or apply its decision.
func (m *metrics) failed(ca *v1alpha1.CustomAutoscaler, reason string) {
	m.errors.WithLabelValues(ca.Namespace, ca.Name, reason).Inc()
}

// forget removes a deleted autoscaler's series.
func (m *metrics) forget(namespace, name string) {
	own := prometheus.Labels{"namespace": namespace, "name": name}
	for _, v := range []interface{ DeletePartialMatch(prometheus.Labels) int }{
		m.desired, m.current, m.ready, m.min, m.max, m.reportingPods, m.newestSample,
		m.value, m.threshold, m.decisions, m.scales, m.errors,
	} {
		v.DeletePartialMatch(own)
	}
}
