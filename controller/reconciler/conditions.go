package reconciler

import (
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
)

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
