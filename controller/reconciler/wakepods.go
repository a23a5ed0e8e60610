package reconciler

import (
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/nemesis-ml/nemesis/controller/decisions"
)

// wakePodsTTL is how long a wake waits for its pod to be created and turn
// ready before it is forgotten: longer than a slow image pull, short
// enough that a pod of a later scale-up is not taken for it.
const wakePodsTTL = 15 * time.Minute

// wakePods follows the pod of each wake from zero for the decision record:
// the first pod of the target that the pod watch sees after the scale was
// written (one that was not there before) and when it turns ready. It runs
// in the pod informer's handler, off the reconcile path, and never blocks:
// the record takes the stages in a queue.
//
// The times are when the watch saw each stage, on the controller's clock,
// not the pod's creationTimestamp and Ready lastTransitionTime: the API
// keeps those to the second, too coarse to order stages that are a few
// milliseconds apart (scale written → pod created), and on another clock.
type wakePods struct {
	to  DecisionRecorder
	now func() time.Time

	mu    sync.Mutex
	wakes map[types.NamespacedName]*pendingWake
}

// pendingWake is one wake waiting for its pod.
type pendingWake struct {
	key      types.NamespacedName
	selector labels.Selector
	// decided names the wake's record; since is when it was registered.
	decided, since time.Time
	// before are the pods of the target that existed at the wake.
	before map[types.UID]bool
	// pod is the wake's pod once seen, created when.
	pod     types.UID
	created time.Time
}

func newWakePods(to DecisionRecorder, now func() time.Time) *wakePods {
	return &wakePods{to: to, now: now, wakes: map[types.NamespacedName]*pendingWake{}}
}

// expect starts following the wake of key decided at decided; existing are
// the target's pods at the time, which are not the wake's.
func (w *wakePods) expect(key types.NamespacedName, selector labels.Selector, decided time.Time, existing []corev1.Pod) {
	if w.to == nil {
		return
	}
	p := &pendingWake{key: key, selector: selector, decided: decided, since: w.now(), before: map[types.UID]bool{}}
	for _, pod := range existing {
		p.before[pod.UID] = true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, old := range w.wakes {
		if p.since.Sub(old.since) > wakePodsTTL {
			delete(w.wakes, k)
		}
	}
	w.wakes[key] = p
}

// forget stops following key's wake: the autoscaler scaled again, so a
// new pod is that scale's.
func (w *wakePods) forget(key types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.wakes, key)
}

// seen takes a pod event: gone is true for a deletion.
func (w *wakePods) seen(pod *corev1.Pod, gone bool) {
	w.mu.Lock()
	if len(w.wakes) == 0 {
		w.mu.Unlock()
		return
	}
	now := w.now()
	var out []decisions.PodStages
	for k, p := range w.wakes {
		stages, done := p.see(pod, gone, now)
		if stages != nil {
			out = append(out, *stages)
		}
		if done || now.Sub(p.since) > wakePodsTTL {
			delete(w.wakes, k)
		}
	}
	w.mu.Unlock()
	for _, s := range out {
		w.to.PodStages(s)
	}
}

// see is one pod event for the wake at now: the stages to record, if any,
// and whether the wake has all it waits for. A pod of the target that was
// not there at the wake becomes the wake's pod; its deletion before it is
// ready lets the next one take its place.
func (p *pendingWake) see(pod *corev1.Pod, gone bool, now time.Time) (*decisions.PodStages, bool) {
	if pod.Namespace != p.key.Namespace || !p.selector.Matches(labels.Set(pod.Labels)) || p.before[pod.UID] {
		return nil, false
	}
	if p.pod != "" && p.pod != pod.UID {
		return nil, false
	}
	if gone || !pod.DeletionTimestamp.IsZero() {
		if p.pod == pod.UID {
			p.pod, p.created = "", time.Time{}
		}
		p.before[pod.UID] = true
		return nil, false
	}
	stages := &decisions.PodStages{Namespace: p.key.Namespace, Name: p.key.Name, Decided: p.decided, Pod: pod.Name}
	if p.pod == "" {
		p.pod, p.created = pod.UID, now
		stages.Created = now
		if !podReady(pod) {
			return stages, false
		}
	}
	if !podReady(pod) {
		return nil, false
	}
	stages.Created, stages.Ready = p.created, now
	return stages, true
}

// handler is the pod informer's handler feeding w.
func (w *wakePods) handler() toolscache.ResourceEventHandler {
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if pod, ok := obj.(*corev1.Pod); ok {
				w.seen(pod, false)
			}
		},
		UpdateFunc: func(_, obj any) {
			if pod, ok := obj.(*corev1.Pod); ok {
				w.seen(pod, false)
			}
		},
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			if pod, ok := obj.(*corev1.Pod); ok {
				w.seen(pod, true)
			}
		},
	}
}
