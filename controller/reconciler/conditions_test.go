package reconciler

import (
	"math"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
)

func TestValuesThatJSONCannotCarryAreLeftOutAndNamed(t *testing.T) {
	var s v1alpha1.CustomAutoscalerStatus
	got := recordable(&s, 3, map[string]float64{"CPU_USAGE": math.Inf(1), "MEMORY_USAGE": 10, "DISK_USAGE": math.NaN()})
	if len(got) != 1 || got["MEMORY_USAGE"] != 10 {
		t.Fatalf("kept %v, want only MEMORY_USAGE", got)
	}
	c := meta.FindStatusCondition(s.Conditions, CondValuesRecorded)
	if c == nil || c.Status != "False" || c.Message != "left out of lastDecision: CPU_USAGE=+Inf, DISK_USAGE=NaN" {
		t.Fatalf("condition %+v", c)
	}
	recordable(&s, 3, map[string]float64{"CPU_USAGE": 1})
	if c := meta.FindStatusCondition(s.Conditions, CondValuesRecorded); c != nil {
		t.Fatalf("condition stays after finite values: %+v", c)
	}
}
