package reconciler

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
)

// podEvent is one pod event the wake sees, and what it must make of it.
type podEvent struct {
	pod  *corev1.Pod
	gone bool
	// created and ready are the offsets (ms) the recorded stages must
	// carry; -1 when no stages are recorded, ready 0 for none yet.
	created, ready int
	done           bool
}

func testPod(uid, ns string, app string, ready, deleting bool) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{UID: types.UID(uid), Name: "pod-" + uid, Namespace: ns, Labels: map[string]string{"app": app}}}
	if ready {
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	}
	if deleting {
		p.DeletionTimestamp = &metav1.Time{Time: time.Unix(1, 0)}
	}
	return p
}

func TestWakePodStages(t *testing.T) {
	const none = -1
	tests := map[string][]podEvent{
		"created, then ready": {
			{pod: testPod("a", "ml", "model", false, false), created: 1},
			{pod: testPod("a", "ml", "model", false, false), created: none},
			{pod: testPod("a", "ml", "model", true, false), created: 1, ready: 3, done: true},
		},
		"created ready at once": {
			{pod: testPod("a", "ml", "model", true, false), created: 1, ready: 1, done: true},
		},
		"the pod from before the wake, other namespaces and other targets are not the wake's": {
			{pod: testPod("old", "ml", "model", true, false), created: none},
			{pod: testPod("a", "other", "model", true, false), created: none},
			{pod: testPod("b", "ml", "other", true, false), created: none},
			{pod: testPod("c", "ml", "model", false, false), created: 4},
		},
		"a second pod does not replace the first": {
			{pod: testPod("a", "ml", "model", false, false), created: 1},
			{pod: testPod("b", "ml", "model", true, false), created: none},
			{pod: testPod("a", "ml", "model", true, false), created: 1, ready: 3, done: true},
		},
		"a pod deleted before it is ready gives way to the next": {
			{pod: testPod("a", "ml", "model", false, false), created: 1},
			{pod: testPod("a", "ml", "model", false, true), created: none},
			{pod: testPod("a", "ml", "model", true, false), gone: true, created: none},
			{pod: testPod("b", "ml", "model", false, false), created: 4},
			{pod: testPod("b", "ml", "model", true, false), created: 4, ready: 5, done: true},
		},
	}
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	selector := labels.SelectorFromSet(labels.Set{"app": "model"})
	for name, events := range tests {
		t.Run(name, func(t *testing.T) {
			p := &pendingWake{key: types.NamespacedName{Namespace: "ml", Name: "digits"}, selector: selector,
				decided: t0, since: t0, before: map[types.UID]bool{"old": true}}
			for i, ev := range events {
				stages, done := p.see(ev.pod, ev.gone, at(i+1))
				if done != ev.done {
					t.Errorf("event %d: done %v, want %v", i+1, done, ev.done)
				}
				if ev.created == none {
					if stages != nil {
						t.Errorf("event %d: stages %+v, want none", i+1, *stages)
					}
					continue
				}
				if stages == nil {
					t.Fatalf("event %d: no stages, want created at %d ms", i+1, ev.created)
				}
				var wantReady time.Time
				if ev.ready > 0 {
					wantReady = at(ev.ready)
				}
				if stages.Namespace != "ml" || stages.Name != "digits" || !stages.Decided.Equal(t0) || stages.Pod != ev.pod.Name ||
					!stages.Created.Equal(at(ev.created)) || !stages.Ready.Equal(wantReady) {
					t.Errorf("event %d: stages %+v, want pod %s created at %s, ready at %s", i+1, *stages, ev.pod.Name, at(ev.created), wantReady)
				}
			}
		})
	}
}
