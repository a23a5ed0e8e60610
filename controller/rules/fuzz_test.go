package rules

import (
	"encoding/binary"
	"math"
	"testing"
	"time"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/controller/podmetric"
)

// FuzzAggregateAndEvaluate: any finite, non-negative samples from up to
// eight pods aggregate to finite means within the samples' range, and
// evaluating rules over them decides a count within the bounds.
func FuzzAggregateAndEvaluate(f *testing.F) {
	seed := func(values ...float64) []byte {
		var b []byte
		for _, v := range values {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
		}
		return b
	}
	f.Add(seed(1.7e308, 1.6e308, 1e308), uint8(3), int32(2))
	f.Add(seed(0, 0, 0, 0), uint8(1), int32(0))
	f.Add(seed(800, 100, 5, 700.5, math.MaxFloat64), uint8(8), int32(10))
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	spec := v1alpha1.CustomAutoscalerSpec{
		MinReplicas: 0, MaxReplicas: 10,
		Rules: []v1alpha1.ScalingRule{
			{ID: "up", Action: v1alpha1.ActionIncreaseInstances, Thresholds: []v1alpha1.Threshold{{MetricType: v1alpha1.MetricCPUUsage, Operator: v1alpha1.OperatorGreaterThan, Value: 700}}},
			{ID: "down", Action: v1alpha1.ActionDecreaseInstances, Thresholds: []v1alpha1.Threshold{{MetricType: v1alpha1.MetricAverageResponseTime, Operator: v1alpha1.OperatorLessThan, Value: 10}}},
			{ID: "zero", Action: v1alpha1.ActionDecreaseInstancesToZero, Thresholds: []v1alpha1.Threshold{{MetricType: v1alpha1.MetricRequestRate, Operator: v1alpha1.OperatorEqualTo, Value: 0}}},
		},
	}
	f.Fuzz(func(t *testing.T, raw []byte, pods uint8, current int32) {
		pods = pods%8 + 1
		byPod := map[string][]podmetric.Sample{}
		lo, hi := math.Inf(1), math.Inf(-1)
		for i := 0; i+8 <= len(raw); i += 8 {
			v := math.Abs(math.Float64frombits(binary.LittleEndian.Uint64(raw[i:])))
			if math.IsNaN(v) || math.IsInf(v, 0) {
				continue
			}
			lo, hi = min(lo, v), max(hi, v)
			id := string(rune('a' + (i/8)%int(pods)))
			byPod[id] = append(byPod[id], podmetric.Sample{ID: id, CPUUsage: v, MemoryUsage: v, DiskUsage: v,
				AverageResponseTime: v, RequestCount: v, RequestRate: v, InFlightRequests: v, ReceivedAt: now.Add(-time.Second)})
		}
		agg := AggregateSamples(byPod, now.Add(-time.Minute))
		for m, v := range agg.Values {
			if math.IsNaN(v) || math.IsInf(v, 0) || v < lo*(1-1e-12) || v > hi*(1+1e-12) {
				t.Fatalf("%s aggregates to %v from samples in [%v, %v]", m, v, lo, hi)
			}
		}
		current = max(0, current%20)
		d := Evaluate(Input{Now: now, Spec: spec, Current: current,
			Aggregates: map[string]Aggregate{"up": agg, "down": agg, "zero": agg}})
		if d.To < 0 || d.To > max(current, spec.MaxReplicas) {
			t.Fatalf("decided %d from %d: %+v", d.To, current, d)
		}
		for k, v := range d.Values {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("decision value %s = %v", k, v)
			}
		}
	})
}
