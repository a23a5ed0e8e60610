package rules

import (
	"fmt"
	"math"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
)

// ActionHold is the action of a decision that keeps the replica count.
const ActionHold = "HOLD"

// Defaults of the behaviour fields left empty.
const (
	DefaultScaleUpStabilization   = 0 * time.Second
	DefaultScaleDownStabilization = 300 * time.Second
	DefaultStep                   = 1
	DefaultIdlePeriod             = 300 * time.Second
)

// Limits: what kept a decision from what its rule asked for. The decision
// record stores them; a decision that no limit held back has none.
const (
	LimitMinReplicas   = "min_replicas"
	LimitMaxReplicas   = "max_replicas"
	LimitStabilization = "stabilization_window"
	LimitIdlePeriod    = "idle_period"
	// LimitStaleMetrics: a decrease's thresholds held, but not every ready
	// pod reported in its window.
	LimitStaleMetrics = "stale_metrics"
)

// Input is everything one evaluation looks at.
type Input struct {
	Now  time.Time
	Spec v1alpha1.CustomAutoscalerSpec
	// Current is the target's replica count (its scale's spec.replicas).
	Current int32
	// Aggregates are by rule id; a rule without one has no data.
	Aggregates map[string]Aggregate
	// Recommendations and IdleSince are the previous evaluation's, from the
	// status.
	Recommendations []v1alpha1.Recommendation
	IdleSince       *metav1.MicroTime
	// Activation is the activator's latest stamp (zero when none) and
	// LastScaleTime the status's: a stamp within the activation lease means
	// requests are held, and one after the last scale wakes a target at zero.
	Activation    time.Time
	LastScaleTime time.Time
}

// Decision is the outcome of one evaluation.
type Decision struct {
	// Action is the rule's action, or ActionHold when the count stays.
	Action string
	// Rule is the id of the rule that decided, empty when none did.
	Rule string
	// Values are the deciding (or first reporting) rule's aggregates.
	Values   map[string]float64
	From, To int32
	Reason   string
	// Recommendations and IdleSince go back into the status.
	Recommendations []v1alpha1.Recommendation
	IdleSince       *metav1.MicroTime
	// RecheckAfter, when positive, is when a stabilization window or the
	// idle period ends and the decision may change without a new sample.
	RecheckAfter time.Duration
	// Limit is what held the result back (one of the Limit constants), or
	// empty.
	Limit string
}

// firing is a rule whose thresholds all hold on fresh enough samples.
type firing struct {
	rule v1alpha1.ScalingRule
	agg  Aggregate
}

// Evaluate decides the target's replica count. An increase beats a
// decrease; a decrease and scale to zero need samples from every ready pod;
// scale to zero needs its thresholds to have held for the idle period.
func Evaluate(in Input) Decision {
	spec := in.Spec
	d := Decision{Action: ActionHold, From: in.Current, To: in.Current}
	fired := map[v1alpha1.Action]*firing{}
	reporting := false
	for _, r := range spec.Rules {
		agg, ok := in.Aggregates[r.ID]
		if !ok || agg.ReportingPods == 0 {
			continue
		}
		if !reporting {
			reporting = true
			d.Values = values(agg)
		}
		if r.Action != v1alpha1.ActionIncreaseInstances && !agg.Complete() {
			if holds(r.Thresholds, agg.Values) {
				d.Limit = LimitStaleMetrics
			}
			continue
		}
		if _, seen := fired[r.Action]; !seen && holds(r.Thresholds, agg.Values) {
			fired[r.Action] = &firing{rule: r, agg: agg}
		}
	}
	// Held requests are load: nothing is idle while the activator holds some.
	held := !in.Activation.IsZero() && in.Now.Sub(in.Activation) < v1alpha1.ActivationLease
	if held {
		delete(fired, v1alpha1.ActionDecreaseInstancesToZero)
		d.RecheckAfter = v1alpha1.ActivationLease - in.Now.Sub(in.Activation)
	}
	if f := fired[v1alpha1.ActionDecreaseInstancesToZero]; f != nil && in.Current > 0 {
		d.IdleSince = in.IdleSince
		if d.IdleSince == nil {
			d.IdleSince = &metav1.MicroTime{Time: in.Now}
		}
	}

	// Bounds first: they are not rules' decisions and wait for nothing.
	switch {
	case in.Current == 0 && spec.MinReplicas == 0 && held && in.Activation.After(in.LastScaleTime):
		d = bound(d, in, 1, v1alpha1.ActionIncreaseInstances, "activation: the activator holds requests for the target at zero replicas")
		d.Rule = v1alpha1.ActivationRule
		return d
	case in.Current == 0 && spec.MinReplicas == 0:
		d.Reason = "target is at zero replicas; the activator wakes it on the next request"
		return d
	case in.Current < spec.MinReplicas:
		d = bound(d, in, spec.MinReplicas, v1alpha1.ActionIncreaseInstances, fmt.Sprintf("below minReplicas %d", spec.MinReplicas))
		d.Limit = LimitMinReplicas
		return d
	case in.Current > spec.MaxReplicas:
		d = bound(d, in, spec.MaxReplicas, v1alpha1.ActionDecreaseInstances, fmt.Sprintf("above maxReplicas %d", spec.MaxReplicas))
		d.Limit = LimitMaxReplicas
		return d
	}

	rec := in.Current
	var decider *firing
	idle := idlePeriod(spec)
	switch inc, dec, zero := fired[v1alpha1.ActionIncreaseInstances], fired[v1alpha1.ActionDecreaseInstances], fired[v1alpha1.ActionDecreaseInstancesToZero]; {
	case inc != nil:
		decider = inc
		rec = min(in.Current+step(spec.Behavior, true), spec.MaxReplicas)
		d.Limit = ""
		if rec < in.Current+step(spec.Behavior, true) {
			d.Limit = LimitMaxReplicas
		}
		if rec == in.Current {
			d.Reason = fmt.Sprintf("%s; already at maxReplicas %d", describe(inc), spec.MaxReplicas)
		}
	case zero != nil && in.Now.Sub(d.IdleSince.Time) >= idle:
		decider = zero
		rec = 0
	case dec != nil:
		decider = dec
		rec = max(in.Current-step(spec.Behavior, false), spec.MinReplicas, 1)
		if rec > in.Current-step(spec.Behavior, false) {
			d.Limit = LimitMinReplicas
		}
		if rec == in.Current {
			d.Reason = fmt.Sprintf("%s; already at the floor of %d", describe(dec), rec)
		}
	case zero != nil:
		left := idle - in.Now.Sub(d.IdleSince.Time)
		d.Rule = zero.rule.ID
		d.Reason = fmt.Sprintf("%s for %s of the %s idle period", describe(zero), in.Now.Sub(d.IdleSince.Time).Round(time.Second), idle)
		d.RecheckAfter = left
		d.Limit = LimitIdlePeriod
	case held:
		d.Reason = fmt.Sprintf("the activator holds requests for the target: not idle; holding %d replicas", in.Current)
	case !reporting:
		d.Reason = fmt.Sprintf("no samples from ready pods in any rule's window; holding %d replicas", in.Current)
	default:
		d.Reason = "no rule's thresholds hold"
	}
	if decider != nil {
		d.Rule = decider.rule.ID
		d.Values = values(decider.agg)
	}

	d.Recommendations = record(in.Recommendations, in.Now, rec, longestWindow(spec.Behavior))
	switch {
	case rec > in.Current:
		win := window(spec.Behavior, true)
		lowest, recheck := extreme(d.Recommendations, in.Now, win, in.Current, false)
		if lowest <= in.Current {
			d.Reason = fmt.Sprintf("%s; scale-up stabilization: a recommendation in the last %s asked for %d", describe(decider), win, lowest)
			d.RecheckAfter = recheck
			d.Limit = LimitStabilization
			return d
		}
		d.To = lowest
		if lowest < rec {
			d.Limit = LimitStabilization
		}
	case rec == 0:
		d.To = 0
	case rec < in.Current:
		win := window(spec.Behavior, false)
		highest, recheck := extreme(d.Recommendations, in.Now, win, in.Current, true)
		if highest >= in.Current {
			d.Reason = fmt.Sprintf("%s; scale-down stabilization: a recommendation in the last %s asked for %d", describe(decider), win, highest)
			d.RecheckAfter = recheck
			d.Limit = LimitStabilization
			return d
		}
		d.To = highest
		if highest > rec {
			d.Limit = LimitStabilization
		}
	}
	if d.To != d.From {
		d.Action = string(decider.rule.Action)
		d.Reason = describe(decider)
		if rec == 0 {
			d.Reason = fmt.Sprintf("%s for the %s idle period", describe(decider), idle)
		}
	}
	if d.To == 0 {
		d.IdleSince = nil
	}
	return d
}

// bound moves the target into [minReplicas, maxReplicas] at once.
func bound(d Decision, in Input, to int32, action v1alpha1.Action, reason string) Decision {
	d.To, d.Action, d.Reason = to, string(action), reason
	d.Recommendations = record(in.Recommendations, in.Now, to, longestWindow(in.Spec.Behavior))
	return d
}

func holds(thresholds []v1alpha1.Threshold, values map[v1alpha1.MetricType]float64) bool {
	for _, t := range thresholds {
		v, ok := values[t.MetricType]
		if !ok || !compare(v, t.Operator, t.Value) {
			return false
		}
	}
	return true
}

// equalTolerance makes EQUAL_TO usable on means of floats: "0 requests per
// second" must match a mean of 1e-17.
const equalTolerance = 1e-9

func compare(v float64, op v1alpha1.Operator, threshold float64) bool {
	switch op {
	case v1alpha1.OperatorGreaterThan:
		return v > threshold
	case v1alpha1.OperatorLessThan:
		return v < threshold
	case v1alpha1.OperatorEqualTo:
		return math.Abs(v-threshold) <= equalTolerance*max(1, math.Abs(threshold))
	}
	return false
}

var operatorSymbols = map[v1alpha1.Operator]string{
	v1alpha1.OperatorGreaterThan: ">", v1alpha1.OperatorLessThan: "<", v1alpha1.OperatorEqualTo: "=",
}

// describe says why a rule fired, e.g. "rule cpu-high: CPU_USAGE 850 > 700
// over 3 pods".
func describe(f *firing) string {
	parts := make([]string, len(f.rule.Thresholds))
	for i, t := range f.rule.Thresholds {
		parts[i] = fmt.Sprintf("%s %.4g %s %.4g", t.MetricType, f.agg.Values[t.MetricType], operatorSymbols[t.Operator], t.Value)
	}
	return fmt.Sprintf("rule %s: %s over %d pods", f.rule.ID, strings.Join(parts, ", "), f.agg.ReportingPods)
}

func values(agg Aggregate) map[string]float64 {
	out := make(map[string]float64, len(agg.Values))
	for m, v := range agg.Values {
		out[string(m)] = v
	}
	return out
}

func policy(b *v1alpha1.Behavior, up bool) *v1alpha1.ScalingPolicy {
	switch {
	case b == nil:
		return nil
	case up:
		return b.ScaleUp
	default:
		return b.ScaleDown
	}
}

func step(b *v1alpha1.Behavior, up bool) int32 {
	if p := policy(b, up); p != nil && p.MaxStep != nil {
		return *p.MaxStep
	}
	return DefaultStep
}

func window(b *v1alpha1.Behavior, up bool) time.Duration {
	if p := policy(b, up); p != nil && p.StabilizationWindowSeconds != nil {
		return time.Duration(*p.StabilizationWindowSeconds) * time.Second
	}
	if up {
		return DefaultScaleUpStabilization
	}
	return DefaultScaleDownStabilization
}

func longestWindow(b *v1alpha1.Behavior) time.Duration {
	return max(window(b, true), window(b, false))
}

func idlePeriod(spec v1alpha1.CustomAutoscalerSpec) time.Duration {
	if spec.ScaleToZero != nil {
		return time.Duration(spec.ScaleToZero.IdlePeriodSeconds) * time.Second
	}
	return DefaultIdlePeriod
}
