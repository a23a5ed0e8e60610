// Package rules turns pod samples into scaling decisions: it aggregates the
// samples over each rule's window, evaluates the rules and applies the
// autoscaler's behaviour. It does no I/O.
package rules

import (
	"slices"
	"time"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/controller/podmetric"
)

// Metrics are the metric types in the order they are reported.
var Metrics = []v1alpha1.MetricType{
	v1alpha1.MetricCPUUsage, v1alpha1.MetricMemoryUsage, v1alpha1.MetricDiskUsage,
	v1alpha1.MetricAverageResponseTime, v1alpha1.MetricRequestRate, v1alpha1.MetricInFlightRequests,
}

// Value is a sample's value of one metric.
func Value(s podmetric.Sample, m v1alpha1.MetricType) float64 {
	switch m {
	case v1alpha1.MetricCPUUsage:
		return s.CPUUsage
	case v1alpha1.MetricMemoryUsage:
		return s.MemoryUsage
	case v1alpha1.MetricDiskUsage:
		return s.DiskUsage
	case v1alpha1.MetricAverageResponseTime:
		return s.AverageResponseTime
	case v1alpha1.MetricRequestRate:
		return s.RequestRate
	case v1alpha1.MetricInFlightRequests:
		return s.InFlightRequests
	}
	return 0
}

// Aggregate is what one rule sees of the target's ready pods.
type Aggregate struct {
	// Values is, per metric, the mean over the reporting pods of each pod's
	// mean over the window: every pod weighs the same however often it
	// pushes.
	Values map[v1alpha1.MetricType]float64
	// ReadyPods is how many of the target's pods are ready.
	ReadyPods int
	// ReportingPods is how many ready pods have a sample in the window.
	ReportingPods int
	// Samples is how many samples the values are the mean of, and Newest
	// when the latest of them arrived (zero when none): the decision
	// record tells how much, and how fresh, data a rule decided on.
	Samples int
	Newest  time.Time
}

// Complete says whether every ready pod reported in the window, which is
// what a decrease needs: a pod that went quiet may be the busy one.
func (a Aggregate) Complete() bool { return a.ReadyPods > 0 && a.ReportingPods == a.ReadyPods }

// Window is the span of samples one rule aggregates: the rule's
// windowSeconds back from now, but never before the last scale, so that the
// next change is decided only on samples taken after the previous one.
func Window(now time.Time, windowSeconds int32, lastScale time.Time) time.Time {
	start := now.Add(-time.Duration(windowSeconds) * time.Second)
	if lastScale.After(start) {
		return lastScale
	}
	return start
}

// Carries says whether s has a value of metric m: a sidecar out of the
// request path measures no requests, Envoy's logs no CPU, and a sample of
// an interval without requests has no response time (it is not 0 ms), save
// in the seed's format, which says nothing of its source.
func Carries(s podmetric.Sample, m v1alpha1.MetricType) bool {
	switch s.Source {
	case podmetric.SourceMeter:
		return m == v1alpha1.MetricCPUUsage || m == v1alpha1.MetricMemoryUsage || m == v1alpha1.MetricDiskUsage
	case podmetric.SourceEnvoy:
		switch m {
		case v1alpha1.MetricAverageResponseTime:
			return s.RequestCount > 0
		case v1alpha1.MetricRequestRate, v1alpha1.MetricInFlightRequests:
			return true
		}
		return false
	case podmetric.SourceProxy:
		return m != v1alpha1.MetricAverageResponseTime || s.RequestCount > 0
	}
	return true
}

// AggregateSamples aggregates the samples of the ready pods (every ready pod
// is a key, with no samples when it has not reported) taken after start.
// Samples stamped slightly ahead of the controller's clock count: ingest
// already refused those too far in the future. A metric's value is the mean
// over the pods with samples that carry it; a metric no pod carries has no
// value.
//
// Means are running means, never sums: any finite samples give finite
// aggregates, whatever their size or number.
func AggregateSamples(byPod map[string][]podmetric.Sample, start time.Time) Aggregate {
	agg := Aggregate{Values: map[v1alpha1.MetricType]float64{}, ReadyPods: len(byPod)}
	means := make([]float64, len(Metrics))
	pods := make([]int, len(Metrics))
	for _, samples := range byPod {
		podMeans := make([]float64, len(Metrics))
		podN := make([]int, len(Metrics))
		n := 0
		for _, s := range MergeEnvoy(samples) {
			if !s.ReceivedAt.After(start) {
				continue
			}
			n++
			if s.ReceivedAt.After(agg.Newest) {
				agg.Newest = s.ReceivedAt
			}
			for i, m := range Metrics {
				if Carries(s, m) {
					podN[i]++
					podMeans[i] += (Value(s, m) - podMeans[i]) / float64(podN[i])
				}
			}
		}
		if n == 0 {
			continue
		}
		agg.ReportingPods++
		agg.Samples += n
		for i := range Metrics {
			if podN[i] > 0 {
				pods[i]++
				means[i] += (podMeans[i] - means[i]) / float64(pods[i])
			}
		}
	}
	for i, m := range Metrics {
		if pods[i] > 0 {
			agg.Values[m] = means[i]
		}
	}
	return agg
}

// MergeEnvoy folds the SourceEnvoy samples of one pod with the same stamp
// into one: each serve replica reads the logs of its own Envoys and stamps
// its samples at the end of the same interval (whole multiples of it), so
// the pod's traffic of that interval is their sum. Counts, rates and
// in-flight requests add, the response time is weighed by requests and the
// p95 is the largest. Other samples are kept as they are, in order.
func MergeEnvoy(samples []podmetric.Sample) []podmetric.Sample {
	// Every evaluation aggregates every pod: leave samples without any of
	// Envoy's (a sidecar in proxy mode, the seed's format) as they are.
	if !slices.ContainsFunc(samples, func(s podmetric.Sample) bool { return s.Source == podmetric.SourceEnvoy }) {
		return samples
	}
	var out []podmetric.Sample
	at := map[int64]int{}
	for _, s := range samples {
		if s.Source != podmetric.SourceEnvoy {
			out = append(out, s)
			continue
		}
		i, ok := at[s.ReceivedAt.UnixNano()]
		if !ok {
			at[s.ReceivedAt.UnixNano()] = len(out)
			out = append(out, s)
			continue
		}
		m := &out[i]
		if total := m.RequestCount + s.RequestCount; total > 0 {
			m.AverageResponseTime = (m.AverageResponseTime*m.RequestCount + s.AverageResponseTime*s.RequestCount) / total
		}
		m.RequestCount += s.RequestCount
		m.RequestRate += s.RequestRate
		m.InFlightRequests += s.InFlightRequests
		m.ErrorCount += s.ErrorCount
		m.P95ResponseTime = max(m.P95ResponseTime, s.P95ResponseTime)
	}
	return out
}
