package activation

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
)

// Local carries activations from the activator to the controller of the same
// process without the API server's round trip, so that a leader holding the
// first request scales at once. The annotation stays the record: it reaches
// the elected controller when that runs in another replica, and survives
// restarts.
type Local struct {
	mu     sync.Mutex
	latest map[types.NamespacedName]time.Time
	events chan event.GenericEvent
}

// NewLocal returns an empty Local.
func NewLocal() *Local {
	return &Local{latest: map[types.NamespacedName]time.Time{}, events: make(chan event.GenericEvent, 64)}
}

// Note records that requests of the CustomAutoscaler namespace/name are held
// at time at, and asks for its reconcile. It never blocks: when no
// controller reads here (this replica is not elected) the request is
// dropped and the annotation covers it.
func (l *Local) Note(namespace, name string, at time.Time) {
	l.mu.Lock()
	for k, t := range l.latest {
		if at.Sub(t) > v1alpha1.ActivationLease {
			delete(l.latest, k)
		}
	}
	key := types.NamespacedName{Namespace: namespace, Name: name}
	if at.After(l.latest[key]) {
		l.latest[key] = at
	}
	l.mu.Unlock()
	ca := &v1alpha1.CustomAutoscaler{}
	ca.Namespace, ca.Name = namespace, name
	select {
	case l.events <- event.GenericEvent{Object: ca}:
	default:
	}
}

// Latest is the latest activation noted for the CustomAutoscaler
// namespace/name; zero when none.
func (l *Local) Latest(namespace, name string) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.latest[types.NamespacedName{Namespace: namespace, Name: name}]
}

// Events are the reconcile requests of Note, for a channel source.
func (l *Local) Events() <-chan event.GenericEvent { return l.events }

// Wake returns the activator's Wake for a serve process: it tells the
// controller of the same process through local, then stamps the annotation
// through s.
func Wake(local *Local, s *Stamper) func(ctx context.Context, namespace, name string, at time.Time) error {
	return func(ctx context.Context, namespace, name string, at time.Time) error {
		local.Note(namespace, name, at)
		return s.Stamp(ctx, namespace, name, at)
	}
}
