package reconciler

import (
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/nemesis-ml/nemesis/controller/activation"
	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/controller/store"
	"github.com/nemesis-ml/nemesis/internal/kubescheme"
)

// LeaderElectionID names the Lease that elects the replica that scales.
const LeaderElectionID = "nemesis-controller.autoscaler-group.autoscaler"

// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;create;update,namespace=nemesis-system
// Leader election announces a new leader with a core Event beside its Lease.
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch,namespace=nemesis-system

// Options configure the controller's manager.
type Options struct {
	Store *store.Store
	// Registerer receives the controller's metrics; none when nil.
	Registerer prometheus.Registerer
	Log        logr.Logger
	// LeaderElection elects one replica to scale; LeaderElectionNamespace
	// holds the Lease (the pod's own namespace when empty, in a cluster).
	LeaderElection          bool
	LeaderElectionNamespace string
	// Resync is the longest time between two evaluations (default 15 s);
	// samples trigger them sooner.
	Resync time.Duration
	// Retry is how soon a reconcile that could not reach Redis or the
	// target tries again (default 2 s).
	Retry time.Duration
	// Activations, when set, are the activator's wakes in this process,
	// acted on without waiting for the annotation to come back.
	Activations *activation.Local
	// Decisions, when set, receives the decision record.
	Decisions DecisionRecorder
}

// NewManager returns a manager running the CustomAutoscaler controller. It
// serves no metrics or probes of its own: `nemesis serve` does.
func NewManager(cfg *rest.Config, opts Options) (manager.Manager, error) {
	if opts.Resync == 0 {
		opts.Resync = 15 * time.Second
	}
	if opts.Retry == 0 {
		opts.Retry = 2 * time.Second
	}
	scheme, err := kubescheme.New()
	if err != nil {
		return nil, err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Logger:                        opts.Log,
		Metrics:                       metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:        "0",
		LeaderElection:                opts.LeaderElection,
		LeaderElectionID:              LeaderElectionID,
		LeaderElectionNamespace:       opts.LeaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true,
		// Several managers run in one test binary.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		return nil, fmt.Errorf("creating controller manager: %w", err)
	}
	r := &Reconciler{
		client: mgr.GetClient(), store: opts.Store, recorder: mgr.GetEventRecorder("nemesis-autoscaler"),
		metrics: newMetrics(opts.Registerer), resync: opts.Resync, retry: opts.Retry, now: time.Now,
		activations: opts.Activations,
		records:     &recordLog{to: opts.Decisions, last: map[types.NamespacedName]string{}},
		wakePods:    newWakePods(opts.Decisions, time.Now),
	}
	// The reconciler lists pods from the cache; registering their informer
	// now syncs it with the manager's caches instead of in the first
	// reconcile, which would delay that autoscaler's first decision (often
	// a wake from zero) by the whole list.
	// The same informer tells the wakes' pods to the decision record.
	pods, err := mgr.GetCache().GetInformer(context.Background(), &corev1.Pod{})
	if err != nil {
		return nil, fmt.Errorf("registering the pod informer: %w", err)
	}
	if opts.Decisions != nil {
		if _, err := pods.AddEventHandler(r.wakePods.handler()); err != nil {
			return nil, fmt.Errorf("watching pods for the decision record: %w", err)
		}
	}
	samples := make(chan event.GenericEvent, 1024)
	if err := mgr.Add(&notifier{store: opts.Store, client: mgr.GetClient(), out: samples, log: opts.Log}); err != nil {
		return nil, fmt.Errorf("adding sample notifier: %w", err)
	}
	b := ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.CustomAutoscaler{}).
		WatchesRawSource(source.Channel(samples, handler.Funcs{GenericFunc: newCoalescing(sampleEvaluationInterval, time.Now).generic}))
	if opts.Activations != nil {
		b = b.WatchesRawSource(source.Channel(opts.Activations.Events(), &handler.EnqueueRequestForObject{}))
	}
	err = b.WithOptions(controller.Options{
		// The default backoff grows to 16 minutes; an autoscaler must
		// come back within seconds of Redis or the API server.
		RateLimiter: workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](50*time.Millisecond, opts.Retry*5),
	}).
		Complete(r)
	if err != nil {
		return nil, fmt.Errorf("creating customautoscaler controller: %w", err)
	}
	return mgr, nil
}
