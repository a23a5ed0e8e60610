package reconciler

import (
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/internal/kubescheme"
)

// TestNotifierReconcilesTheAutoscalersOfThePods: new samples of a pod
// reconcile the autoscalers whose target selects it, not every autoscaler
// of its namespace; a pod or selector not known yet reconciles them all.
func TestNotifierReconcilesTheAutoscalersOfThePods(t *testing.T) {
	scheme, err := kubescheme.New()
	if err != nil {
		t.Fatal(err)
	}
	autoscaler := func(ns, name, selector string) *v1alpha1.CustomAutoscaler {
		return &v1alpha1.CustomAutoscaler{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Status: v1alpha1.CustomAutoscalerStatus{Selector: selector}}
	}
	pod := func(ns, name, app string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": app}}}
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(
		autoscaler("ml", "digits", "app=digits"), autoscaler("ml", "resnet", "app=resnet"),
		autoscaler("ml", "new", ""), autoscaler("ml", "odd", "app in ("),
		autoscaler("other", "digits", "app=digits"),
		pod("ml", "digits-1", "digits"), pod("ml", "resnet-1", "resnet"), pod("other", "digits-1", "digits"),
	).Build()
	n := &notifier{client: c, log: logr.Discard()}
	for _, tc := range []struct {
		pods []string
		want []string
	}{
		{[]string{"ml/digits-1"}, []string{"ml/digits", "ml/new", "ml/odd"}},
		{[]string{"ml/digits-1", "ml/resnet-1"}, []string{"ml/digits", "ml/new", "ml/odd", "ml/resnet"}},
		{[]string{"other/digits-1"}, []string{"other/digits"}},
		{[]string{"ml/not-in-the-cache-yet"}, []string{"ml/digits", "ml/new", "ml/odd", "ml/resnet"}},
		{[]string{"no-namespace"}, nil},
	} {
		var got []string
		for _, ca := range n.autoscalersOf(t.Context(), tc.pods) {
			got = append(got, ca.Namespace+"/"+ca.Name)
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("samples of %v reconcile %v, want %v", tc.pods, got, tc.want)
		}
	}
}

// queued records what the coalescing handler enqueues: 0 for at once, the
// delay otherwise.
type queued struct {
	workqueue.TypedRateLimitingInterface[reconcile.Request]
	adds []time.Duration
}

func (q *queued) Add(reconcile.Request)                         { q.adds = append(q.adds, 0) }
func (q *queued) AddAfter(_ reconcile.Request, d time.Duration) { q.adds = append(q.adds, d) }

// TestSamplesCoalesce: an autoscaler's evaluations for new samples are at
// least the interval apart, and samples within it are read by the one
// scheduled at its end.
func TestSamplesCoalesce(t *testing.T) {
	start := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	now := start
	c := newCoalescing(500*time.Millisecond, func() time.Time { return now })
	ca := event.GenericEvent{Object: &v1alpha1.CustomAutoscaler{ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "digits"}}}
	other := event.GenericEvent{Object: &v1alpha1.CustomAutoscaler{ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "resnet"}}}
	ms := time.Millisecond
	for _, step := range []struct {
		at    time.Duration
		event event.GenericEvent
		want  []time.Duration
	}{
		{0, ca, []time.Duration{0}},                     // at once
		{100 * ms, ca, []time.Duration{400 * ms}},       // at the interval's end
		{200 * ms, ca, nil},                             // that one reads these too
		{300 * ms, other, []time.Duration{0}},           // another autoscaler is its own
		{600 * ms, ca, []time.Duration{400 * ms}},       // the one at 500 ms ran: next at 1 s
		{1600 * ms, ca, []time.Duration{0}},             // a quiet interval: at once again
		{1600*ms + 499*ms, ca, []time.Duration{1 * ms}}, // within it
		{1600*ms + 2000*ms, ca, []time.Duration{0}},
	} {
		now = start.Add(step.at)
		q := &queued{}
		c.generic(t.Context(), step.event, q)
		if !slices.Equal(q.adds, step.want) {
			t.Fatalf("at %v: enqueued %v, want %v", step.at, q.adds, step.want)
		}
	}
}
