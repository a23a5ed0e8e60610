package reconciler

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/controller/store"
)

// sampleEvaluationInterval is the shortest time between two evaluations of
// an autoscaler that new samples trigger: each costs a read of the target's
// scale from the API server, and every sidecar pushes its own samples, so
// an autoscaler of twenty pods would otherwise evaluate twenty times a
// second and use the controller's whole API budget (20 requests a second).
// Samples within it wait for one evaluation at its end, at most 200 ms:
// 500 ms made a sidecar's sample miss a one-second window it would have
// caught (bench/controller: breach to scale 1.0 s → 2.0 s).
const sampleEvaluationInterval = 200 * time.Millisecond

// notifier turns the sample notices published by ingest, on any replica,
// into reconciles of the autoscalers whose targets own the pods. It runs on
// the leader only, like the controller.
type notifier struct {
	store  *store.Store
	client client.Reader
	out    chan<- event.GenericEvent
	log    logr.Logger
}

func (n *notifier) NeedLeaderElection() bool { return true }

func (n *notifier) Start(ctx context.Context) error {
	for ids := range n.store.Updates(ctx) {
		for _, ca := range n.autoscalersOf(ctx, ids) {
			select {
			case n.out <- event.GenericEvent{Object: ca}:
			case <-ctx.Done():
				return nil
			}
		}
	}
	return nil
}

// autoscalersOf returns the autoscalers that may own the pods (namespace/
// name): those whose target's selector matches one of them, and those whose
// selector or pod is not known yet (a new autoscaler, a pod the cache has
// not seen), which cannot be told apart.
func (n *notifier) autoscalersOf(ctx context.Context, ids []string) []*v1alpha1.CustomAutoscaler {
	pods := map[string][]labels.Set{} // namespace → the pods' labels; nil: a pod not known
	for _, id := range ids {
		ns, name, ok := strings.Cut(id, "/")
		if !ok {
			continue
		}
		pod := &corev1.Pod{}
		if err := n.client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, pod); err != nil {
			pods[ns] = append(pods[ns], nil)
			continue
		}
		pods[ns] = append(pods[ns], labels.Set(pod.Labels))
	}
	var out []*v1alpha1.CustomAutoscaler
	for ns, sets := range pods {
		list := &v1alpha1.CustomAutoscalerList{}
		if err := n.client.List(ctx, list, client.InNamespace(ns)); err != nil {
			n.log.Error(err, "listing autoscalers for new samples", "namespace", ns)
			continue
		}
		for i := range list.Items {
			if owns(&list.Items[i], sets) {
				out = append(out, &list.Items[i])
			}
		}
	}
	return out
}

// owns tells whether ca's target may own one of the pods of these labels.
func owns(ca *v1alpha1.CustomAutoscaler, pods []labels.Set) bool {
	sel, err := labels.Parse(ca.Status.Selector)
	if ca.Status.Selector == "" || err != nil {
		return true
	}
	for _, p := range pods {
		if p == nil || sel.Matches(p) {
			return true
		}
	}
	return false
}

// coalescing enqueues an autoscaler for new samples at most once per
// interval: samples arriving sooner schedule one reconcile at the end of
// it, which reads them all.
type coalescing struct {
	interval time.Duration
	now      func() time.Time
	mu       sync.Mutex
	// next is when each autoscaler may be enqueued again; past it, as if
	// absent. A time still ahead has a reconcile scheduled for it.
	next map[types.NamespacedName]time.Time
}

func newCoalescing(interval time.Duration, now func() time.Time) *coalescing {
	return &coalescing{interval: interval, now: now, next: map[types.NamespacedName]time.Time{}}
}

func (c *coalescing) generic(_ context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	key := client.ObjectKeyFromObject(e.Object)
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	next, ok := c.next[key]
	switch {
	case !ok || !now.Before(next):
		q.Add(reconcile.Request{NamespacedName: key})
		c.next[key] = now.Add(c.interval)
		c.forget(now)
	case next.Sub(now) < c.interval:
		// Enqueued within the interval: one more, at its end. The
		// reconcile then reads what arrived until it runs.
		q.AddAfter(reconcile.Request{NamespacedName: key}, next.Sub(now))
		c.next[key] = next.Add(c.interval)
	}
	// Otherwise a reconcile is already scheduled at the interval's end.
}

// forget drops the autoscalers free to be enqueued (deleted ones among
// them) once there are many.
func (c *coalescing) forget(now time.Time) {
	if len(c.next) < 256 {
		return
	}
	for k, t := range c.next {
		if !now.Before(t) {
			delete(c.next, k)
		}
	}
}
