package reconciler

import (
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/controller/decisions"
	"github.com/nemesis-ml/nemesis/controller/rules"
)

// DecisionRecorder receives the decision record and the stages of each
// wake's pod; it must not block (decisions.Writer queues and drops rather
// than wait).
type DecisionRecorder interface {
	Record(decisions.Record)
	PodStages(decisions.PodStages)
}

// recordLog keeps, per autoscaler, the last held-back evaluation recorded,
// so that a hold repeated on every sample becomes one record until its
// rule, count or limit changes.
type recordLog struct {
	to   DecisionRecorder
	mu   sync.Mutex
	last map[types.NamespacedName]string
}

// hold records an evaluation that changed nothing because a limit held it
// back, unless the previous record said the same.
func (l *recordLog) hold(ca *v1alpha1.CustomAutoscaler, in rules.Input, d rules.Decision, limit string) {
	if l.to == nil || limit == "" {
		return
	}
	key := fmt.Sprintf("%s|%s|%s|%d|%d", d.Action, d.Rule, limit, d.From, d.To)
	name := types.NamespacedName{Namespace: ca.Namespace, Name: ca.Name}
	l.mu.Lock()
	same := l.last[name] == key
	l.last[name] = key
	l.mu.Unlock()
	if !same {
		l.to.Record(record(ca, in, d, limit, nil))
	}
}

// applied records a scale written (or, in dry-run, one that would have
// been), and forgets the last hold: the next hold is news.
func (l *recordLog) applied(ca *v1alpha1.CustomAutoscaler, in rules.Input, d rules.Decision, limit string, wake *decisions.Wake) {
	if l.to == nil {
		return
	}
	l.mu.Lock()
	delete(l.last, types.NamespacedName{Namespace: ca.Namespace, Name: ca.Name})
	l.mu.Unlock()
	l.to.Record(record(ca, in, d, limit, wake))
}

func record(ca *v1alpha1.CustomAutoscaler, in rules.Input, d rules.Decision, limit string, wake *decisions.Wake) decisions.Record {
	r := decisions.Record{
		Namespace: ca.Namespace, Name: ca.Name, Time: in.Now, From: d.From, To: d.To,
		Action: d.Action, Rule: d.Rule, Reason: d.Reason, LimitedBy: limit, DryRun: ca.Spec.DryRun, Wake: wake,
	}
	for _, rule := range ca.Spec.Rules {
		agg := in.Aggregates[rule.ID]
		for _, t := range rule.Thresholds {
			input := decisions.Input{
				Rule: rule.ID, Metric: string(t.MetricType), Operator: string(t.Operator), Threshold: t.Value,
				WindowSeconds: rule.WindowSeconds, ReadyPods: agg.ReadyPods, ReportingPods: agg.ReportingPods,
				Samples: agg.Samples,
			}
			if v, ok := agg.Values[t.MetricType]; ok {
				input.Value = &v
			}
			if !agg.Newest.IsZero() {
				age := max(in.Now.Sub(agg.Newest), 0).Seconds()
				input.NewestSampleAgeSeconds = &age
			}
			r.Inputs = append(r.Inputs, input)
		}
	}
	return r
}

// limitOf is what held d back, dry-run included.
func limitOf(ca *v1alpha1.CustomAutoscaler, d rules.Decision) string {
	if ca.Spec.DryRun && d.To != d.From {
		return decisions.LimitDryRun
	}
	return d.Limit
}

// wakeStages are the stages of a wake the controller saw.
func wakeStages(in rules.Input, written time.Time) *decisions.Wake {
	return &decisions.Wake{RequestHeld: in.Activation, Decided: in.Now, ScaleWritten: written}
}
