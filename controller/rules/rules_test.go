package rules

import (
	"math"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/controller/podmetric"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func TestAggregateSamples(t *testing.T) {
	at := func(sec int, cpu float64) podmetric.Sample {
		return podmetric.Sample{CPUUsage: cpu, ReceivedAt: t0.Add(time.Duration(sec) * time.Second)}
	}
	for name, tc := range map[string]struct {
		byPod     map[string][]podmetric.Sample
		start     time.Time
		want      float64
		reporting int
		complete  bool
	}{
		"mean of each pod's mean, pods weigh the same": {
			// pod a: mean 100 over 3 samples; pod b: 400 over 1 → (100+400)/2.
			byPod:     map[string][]podmetric.Sample{"a": {at(-3, 50), at(-2, 100), at(-1, 150)}, "b": {at(-1, 400)}},
			start:     t0.Add(-10 * time.Second),
			want:      250,
			reporting: 2, complete: true,
		},
		"samples at or before the start are left out": {
			byPod:     map[string][]podmetric.Sample{"a": {at(-20, 1000), at(-10, 1000), at(-1, 100)}},
			start:     t0.Add(-10 * time.Second),
			want:      100,
			reporting: 1, complete: true,
		},
		"a ready pod without samples makes it incomplete": {
			byPod:     map[string][]podmetric.Sample{"a": {at(-1, 800)}, "b": nil},
			start:     t0.Add(-10 * time.Second),
			want:      800,
			reporting: 1, complete: false,
		},
		"no ready pods": {
			byPod: map[string][]podmetric.Sample{},
			start: t0.Add(-10 * time.Second),
		},
	} {
		t.Run(name, func(t *testing.T) {
			got := AggregateSamples(tc.byPod, tc.start)
			if got.Values[v1alpha1.MetricCPUUsage] != tc.want || got.ReportingPods != tc.reporting || got.Complete() != tc.complete {
				t.Fatalf("got cpu %v reporting %d complete %v, want %v %d %v",
					got.Values[v1alpha1.MetricCPUUsage], got.ReportingPods, got.Complete(), tc.want, tc.reporting, tc.complete)
			}
		})
	}
}

// A pod metered by a sidecar out of the request path and timed from
// Envoy's logs by two serve replicas: each metric comes from the samples
// that carry it, the replicas' samples of one second add up, and a second
// without requests has no response time.
func TestAggregateSamplesBySource(t *testing.T) {
	sec := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Second) }
	envoy := func(n int, requests, ms float64) podmetric.Sample {
		return podmetric.Sample{Source: podmetric.SourceEnvoy, RequestCount: requests, RequestRate: requests, AverageResponseTime: ms, InFlightRequests: requests * ms / 1000, ReceivedAt: sec(n)}
	}
	byPod := map[string][]podmetric.Sample{
		"busy": {
			{Source: podmetric.SourceMeter, CPUUsage: 600, MemoryUsage: 100, ReceivedAt: sec(-2)},
			envoy(-2, 10, 20), envoy(-2, 30, 40), // two replicas, one second: 40 requests, 35 ms
			envoy(-1, 40, 35),
		},
		"idle": {
			{Source: podmetric.SourceMeter, CPUUsage: 200, MemoryUsage: 100, ReceivedAt: sec(-2)},
			envoy(-2, 0, 0), envoy(-1, 0, 0),
		},
	}
	got := AggregateSamples(byPod, sec(-10))
	want := map[v1alpha1.MetricType]float64{
		v1alpha1.MetricCPUUsage:            400, // (600 + 200) / 2: Envoy's samples carry no CPU
		v1alpha1.MetricMemoryUsage:         100,
		v1alpha1.MetricAverageResponseTime: 35,  // the idle pod has none, not 0 ms
		v1alpha1.MetricRequestRate:         20,  // (40 + 0) / 2
		v1alpha1.MetricInFlightRequests:    0.7, // (1.4 + 0) / 2
	}
	for m, w := range want {
		if v, ok := got.Values[m]; !ok || math.Abs(v-w) > 1e-9 {
			t.Errorf("%s = %v (present %v), want %v", m, v, ok, w)
		}
	}
	if _, ok := got.Values[v1alpha1.MetricDiskUsage]; !ok {
		t.Error("disk usage missing: the meter's samples carry it")
	}
	if got.ReportingPods != 2 || got.Samples != 6 {
		t.Errorf("reporting %d pods, %d samples; want 2 and 6 (the replicas' samples of one second are one)", got.ReportingPods, got.Samples)
	}

	// Envoy's samples alone: no CPU value at all, so a CPU rule cannot fire.
	got = AggregateSamples(map[string][]podmetric.Sample{"p": {envoy(-1, 5, 10)}}, sec(-10))
	if v, ok := got.Values[v1alpha1.MetricCPUUsage]; ok {
		t.Errorf("cpu %v from samples that carry none", v)
	}
	// The seed's format (no source) keeps a response time of 0.
	got = AggregateSamples(map[string][]podmetric.Sample{"p": {{ReceivedAt: sec(-1)}}}, sec(-10))
	if v, ok := got.Values[v1alpha1.MetricAverageResponseTime]; !ok || v != 0 {
		t.Errorf("seed-format response time %v (present %v), want 0", v, ok)
	}
}

func TestWindowStartsNoEarlierThanTheLastScale(t *testing.T) {
	if got := Window(t0, 30, time.Time{}); !got.Equal(t0.Add(-30 * time.Second)) {
		t.Errorf("without a scale: %v", got)
	}
	if got := Window(t0, 30, t0.Add(-5*time.Second)); !got.Equal(t0.Add(-5 * time.Second)) {
		t.Errorf("after a scale 5s ago: %v", got)
	}
}

func spec() v1alpha1.CustomAutoscalerSpec {
	th := func(m v1alpha1.MetricType, op v1alpha1.Operator, v float64) []v1alpha1.Threshold {
		return []v1alpha1.Threshold{{MetricType: m, Operator: op, Value: v}}
	}
	return v1alpha1.CustomAutoscalerSpec{
		MinReplicas: 0, MaxReplicas: 5,
		Rules: []v1alpha1.ScalingRule{
			{ID: "cpu-high", Action: v1alpha1.ActionIncreaseInstances, Thresholds: th(v1alpha1.MetricCPUUsage, v1alpha1.OperatorGreaterThan, 700), WindowSeconds: 30},
			{ID: "cpu-low", Action: v1alpha1.ActionDecreaseInstances, Thresholds: th(v1alpha1.MetricCPUUsage, v1alpha1.OperatorLessThan, 200), WindowSeconds: 30},
			{ID: "idle", Action: v1alpha1.ActionDecreaseInstancesToZero, Thresholds: th(v1alpha1.MetricRequestRate, v1alpha1.OperatorEqualTo, 0), WindowSeconds: 30},
			{ID: "slow", Action: v1alpha1.ActionIncreaseInstances, Thresholds: th(v1alpha1.MetricAverageResponseTime, v1alpha1.OperatorGreaterThan, 500), WindowSeconds: 30},
		},
		Behavior: &v1alpha1.Behavior{
			ScaleUp:   &v1alpha1.ScalingPolicy{StabilizationWindowSeconds: ptr.To[int32](0), MaxStep: ptr.To[int32](2)},
			ScaleDown: &v1alpha1.ScalingPolicy{StabilizationWindowSeconds: ptr.To[int32](60)},
		},
		ScaleToZero: &v1alpha1.ScaleToZero{IdlePeriodSeconds: 120},
	}
}

// every gives all four rules the same aggregate.
func every(pods, reporting int, cpu, rate, rt float64) map[string]Aggregate {
	agg := Aggregate{ReadyPods: pods, ReportingPods: reporting, Values: map[v1alpha1.MetricType]float64{
		v1alpha1.MetricCPUUsage: cpu, v1alpha1.MetricRequestRate: rate, v1alpha1.MetricAverageResponseTime: rt,
	}}
	if reporting == 0 {
		agg.Values = map[v1alpha1.MetricType]float64{}
	}
	return map[string]Aggregate{"cpu-high": agg, "cpu-low": agg, "idle": agg, "slow": agg}
}

func rec(ago time.Duration, replicas int32) v1alpha1.Recommendation {
	return v1alpha1.Recommendation{Time: metav1.NewMicroTime(t0.Add(-ago)), Replicas: replicas}
}

func TestEvaluate(t *testing.T) {
	// The decrease rule has asked for 2 for longer than the 60 s window.
	longAgo := []v1alpha1.Recommendation{rec(time.Hour, 3), rec(61*time.Second, 2)}
	for name, tc := range map[string]struct {
		mutate    func(*Input)
		action    string
		rule      string
		to        int32
		reason    string
		idleSince bool
		limit     string
	}{
		"increase by the step": {
			mutate: func(in *Input) { in.Aggregates = every(3, 3, 900, 5, 100) },
			action: "INCREASE_INSTANCES", rule: "cpu-high", to: 5, reason: "CPU_USAGE 900 > 700 over 3 pods",
		},
		"increase stops at maxReplicas": {
			mutate: func(in *Input) { in.Current = 5; in.Aggregates = every(5, 5, 900, 5, 100) },
			action: ActionHold, rule: "cpu-high", to: 5, reason: "already at maxReplicas 5",
			limit: LimitMaxReplicas,
		},
		"an increase needs only some pods reporting": {
			mutate: func(in *Input) { in.Aggregates = every(3, 1, 900, 5, 100) },
			action: "INCREASE_INSTANCES", to: 5, rule: "cpu-high",
		},
		"an increase beats a decrease": {
			mutate: func(in *Input) { in.Aggregates = every(3, 3, 100, 5, 900) },
			action: "INCREASE_INSTANCES", rule: "slow", to: 5,
		},
		"decrease once the window saw nothing higher": {
			mutate: func(in *Input) { in.Aggregates = every(3, 3, 100, 5, 100); in.Recommendations = longAgo },
			action: "DECREASE_INSTANCES", rule: "cpu-low", to: 2,
		},
		"decrease held by the scale-down stabilization window": {
			mutate: func(in *Input) {
				in.Aggregates = every(3, 3, 100, 5, 100)
				in.Recommendations = []v1alpha1.Recommendation{rec(time.Hour, 2), rec(30*time.Second, 3)}
			},
			action: ActionHold, rule: "cpu-low", to: 3, reason: "scale-down stabilization",
			limit: LimitStabilization,
		},
		"a controller without history waits a whole window before decreasing": {
			mutate: func(in *Input) { in.Aggregates = every(3, 3, 100, 5, 100) },
			action: ActionHold, to: 3, reason: "scale-down stabilization",
			limit: LimitStabilization,
		},
		"no decrease unless every ready pod reported": {
			mutate: func(in *Input) { in.Aggregates = every(3, 2, 100, 5, 100); in.Recommendations = longAgo },
			action: ActionHold, to: 3, reason: "no rule's thresholds hold",
			limit: LimitStaleMetrics,
		},
		"decrease never goes below one": {
			mutate: func(in *Input) {
				in.Current = 1
				in.Aggregates = every(1, 1, 100, 5, 100)
				in.Recommendations = []v1alpha1.Recommendation{rec(time.Hour, 1)}
			},
			action: ActionHold, to: 1, reason: "already at the floor of 1",
			limit: LimitMinReplicas,
		},
		"idle starts the idle period": {
			mutate: func(in *Input) { in.Aggregates = every(3, 3, 300, 0, 100) },
			action: ActionHold, rule: "idle", to: 3, reason: "for 0s of the 2m0s idle period", idleSince: true,
			limit: LimitIdlePeriod,
		},
		"idle for the whole idle period scales to zero": {
			mutate: func(in *Input) {
				in.Aggregates = every(3, 3, 300, 0, 100)
				in.IdleSince = &metav1.MicroTime{Time: t0.Add(-121 * time.Second)}
			},
			action: "DECREASE_INSTANCES_TO_ZERO", rule: "idle", to: 0,
		},
		"missing samples hold and forget the idle period": {
			mutate: func(in *Input) {
				in.Aggregates = every(3, 0, 0, 0, 0)
				in.IdleSince = &metav1.MicroTime{Time: t0.Add(-time.Hour)}
			},
			action: ActionHold, to: 3, reason: "no samples from ready pods",
		},
		"a quiet pod stops scale to zero": {
			mutate: func(in *Input) {
				in.Aggregates = every(3, 2, 300, 0, 100)
				in.IdleSince = &metav1.MicroTime{Time: t0.Add(-time.Hour)}
			},
			action: ActionHold, to: 3,
			limit: LimitStaleMetrics,
		},
		"at zero the controller waits for the activator": {
			mutate: func(in *Input) { in.Current = 0; in.Aggregates = every(0, 0, 0, 0, 0) },
			action: ActionHold, to: 0, reason: "activator",
		},
		"held requests wake a target at zero": {
			mutate: func(in *Input) {
				in.Current = 0
				in.Aggregates = every(0, 0, 0, 0, 0)
				in.LastScaleTime = t0.Add(-time.Minute)
				in.Activation = t0.Add(-time.Second)
			},
			action: "INCREASE_INSTANCES", rule: "activation", to: 1, reason: "activation",
		},
		"a stamp from before the scale to zero wakes nothing": {
			mutate: func(in *Input) {
				in.Current = 0
				in.Aggregates = every(0, 0, 0, 0, 0)
				in.LastScaleTime = t0.Add(-time.Second)
				in.Activation = t0.Add(-2 * time.Second)
			},
			action: ActionHold, to: 0, reason: "activator",
		},
		"an expired stamp wakes nothing": {
			mutate: func(in *Input) {
				in.Current = 0
				in.Aggregates = every(0, 0, 0, 0, 0)
				in.Activation = t0.Add(-v1alpha1.ActivationLease)
			},
			action: ActionHold, to: 0, reason: "activator",
		},
		"held requests are load: no scale to zero, the idle period restarts": {
			mutate: func(in *Input) {
				in.Aggregates = every(3, 3, 300, 0, 100)
				in.IdleSince = &metav1.MicroTime{Time: t0.Add(-time.Hour)}
				in.Activation = t0.Add(-time.Second)
			},
			action: ActionHold, to: 3, reason: "the activator holds requests",
		},
		"after the lease idle counts again": {
			mutate: func(in *Input) {
				in.Aggregates = every(3, 3, 300, 0, 100)
				in.IdleSince = &metav1.MicroTime{Time: t0.Add(-time.Hour)}
				in.Activation = t0.Add(-v1alpha1.ActivationLease - time.Second)
			},
			action: "DECREASE_INSTANCES_TO_ZERO", rule: "idle", to: 0,
		},
		"below minReplicas": {
			mutate: func(in *Input) { in.Spec.MinReplicas = 2; in.Current = 1; in.Aggregates = every(1, 1, 300, 5, 100) },
			action: "INCREASE_INSTANCES", to: 2, reason: "below minReplicas 2",
			limit: LimitMinReplicas,
		},
		"above maxReplicas": {
			mutate: func(in *Input) { in.Current = 9; in.Aggregates = every(9, 9, 900, 5, 100) },
			action: "DECREASE_INSTANCES", to: 5, reason: "above maxReplicas 5",
			limit: LimitMaxReplicas,
		},
		"scale-up stabilization holds a fresh increase": {
			mutate: func(in *Input) {
				in.Spec.Behavior.ScaleUp.StabilizationWindowSeconds = ptr.To[int32](30)
				in.Aggregates = every(3, 3, 900, 5, 100)
				in.Recommendations = []v1alpha1.Recommendation{rec(time.Hour, 3), rec(10*time.Second, 5)}
			},
			action: ActionHold, to: 3, reason: "scale-up stabilization",
			limit: LimitStabilization,
		},
		"scale-up by the smallest step the window asked for": {
			mutate: func(in *Input) {
				in.Spec.Behavior.ScaleUp.StabilizationWindowSeconds = ptr.To[int32](30)
				in.Aggregates = every(3, 3, 900, 5, 100)
				in.Recommendations = []v1alpha1.Recommendation{rec(time.Hour, 4), rec(10*time.Second, 5)}
			},
			action: "INCREASE_INSTANCES", to: 4,
			limit: LimitStabilization,
		},
	} {
		t.Run(name, func(t *testing.T) {
			in := Input{Now: t0, Spec: spec(), Current: 3}
			tc.mutate(&in)
			d := Evaluate(in)
			if d.Action != tc.action || d.To != tc.to || (tc.rule != "" && d.Rule != tc.rule) || !strings.Contains(d.Reason, tc.reason) {
				t.Fatalf("got %s rule %q %d→%d %q; want %s rule %q to %d, reason containing %q",
					d.Action, d.Rule, d.From, d.To, d.Reason, tc.action, tc.rule, tc.to, tc.reason)
			}
			if d.Limit != tc.limit {
				t.Errorf("limit = %q, want %q", d.Limit, tc.limit)
			}
			if (d.IdleSince != nil) != tc.idleSince {
				t.Errorf("idleSince = %v, want set: %v", d.IdleSince, tc.idleSince)
			}
		})
	}
}

func TestCompare(t *testing.T) {
	for name, tc := range map[string]struct {
		v, threshold float64
		op           v1alpha1.Operator
		want         bool
	}{
		"greater":                {v: 701, threshold: 700, op: v1alpha1.OperatorGreaterThan, want: true},
		"not greater when equal": {v: 700, threshold: 700, op: v1alpha1.OperatorGreaterThan},
		"less":                   {v: 1, threshold: 2, op: v1alpha1.OperatorLessThan, want: true},
		"equal to zero":          {v: 1e-17, threshold: 0, op: v1alpha1.OperatorEqualTo, want: true},
		"not equal":              {v: 0.5, threshold: 0, op: v1alpha1.OperatorEqualTo},
	} {
		t.Run(name, func(t *testing.T) {
			if got := compare(tc.v, tc.op, tc.threshold); got != tc.want {
				t.Fatalf("compare(%v %s %v) = %v", tc.v, tc.op, tc.threshold, got)
			}
		})
	}
}

func TestRecommendationsKeepWhatTheWindowsSee(t *testing.T) {
	history := []v1alpha1.Recommendation{rec(10*time.Minute, 1), rec(5*time.Minute, 2), rec(30*time.Second, 3)}
	got := record(history, t0, 4, 60*time.Second)
	// The 5-minute-old entry is in force when the 60 s window starts; the
	// 10-minute-old one is seen by no window.
	if len(got) != 3 || got[0].Replicas != 2 || got[2].Replicas != 4 {
		t.Fatalf("record = %+v", got)
	}
	if got := record(got, t0, 4, 60*time.Second); len(got) != 3 {
		t.Fatalf("recording the value in force again added an entry: %+v", got)
	}
	highest, recheck := extreme(got, t0, 60*time.Second, 4, true)
	if highest != 4 || recheck != 30*time.Second {
		t.Fatalf("extreme = %d, recheck %s", highest, recheck)
	}
}
