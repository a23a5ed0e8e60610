package reconciler

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
)

// Condition types of a CustomAutoscaler.
const (
	CondReady            = "Ready"
	CondScalingActive    = "ScalingActive"
	CondAbleToScale      = "AbleToScale"
	CondMetricsAvailable = "MetricsAvailable"
	// CondValuesRecorded is False while a decision's value is not a finite
	// number: JSON cannot carry it, so it is left out of the status rather
	// than failing the write, and named here. Absent otherwise.
	CondValuesRecorded = "ValuesRecorded"
	// CondRouteAccepted says whether Envoy serves the autoscaler's route
	// (False with reason PathPrefixTaken when an older route keeps it).
	CondRouteAccepted = "RouteAccepted"
)

// recordable returns the values a status can carry, and sets or clears
// CondValuesRecorded for those it cannot.
func recordable(s *v1alpha1.CustomAutoscalerStatus, generation int64, values map[string]float64) map[string]float64 {
	var dropped []string
	kept := make(map[string]float64, len(values))
	for name, v := range values {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			dropped = append(dropped, fmt.Sprintf("%s=%v", name, v))
			continue
		}
		kept[name] = v
	}
	if len(dropped) == 0 {
		meta.RemoveStatusCondition(&s.Conditions, CondValuesRecorded)
		return kept
	}
	slices.Sort(dropped)
	set(s, generation, CondValuesRecorded, false, "NotFinite", "left out of lastDecision: "+strings.Join(dropped, ", "))
	return kept
}

func set(s *v1alpha1.CustomAutoscalerStatus, generation int64, typ string, ok bool, reason, msg string) {
	status := metav1.ConditionFalse
	if ok {
		status = metav1.ConditionTrue
	}
	meta.SetStatusCondition(&s.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: generation,
	})
}

// setReady derives Ready from the other conditions: the autoscaler can act
// on the target and sees fresh metrics, or the target rests at zero.
func setReady(s *v1alpha1.CustomAutoscalerStatus, generation int64, atZero bool) {
	for _, typ := range []string{CondAbleToScale, CondMetricsAvailable} {
		c := meta.FindStatusCondition(s.Conditions, typ)
		if c == nil || c.Status == metav1.ConditionTrue || typ == CondMetricsAvailable && atZero {
			continue
		}
		set(s, generation, CondReady, false, c.Reason, c.Message)
		return
	}
	set(s, generation, CondReady, true, "Ready", "the autoscaler sees its target and fresh samples")
}
