// Package controller assembles the autoscaling half of `nemesis serve`:
// POST /metrics on every replica, and the leader-elected CustomAutoscaler
// controller.
package controller

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/nemesis-ml/nemesis/controller/activation"
	"github.com/nemesis-ml/nemesis/controller/ingest"
	"github.com/nemesis-ml/nemesis/controller/reconciler"
	"github.com/nemesis-ml/nemesis/controller/store"
)

// Config is what the autoscaling half needs.
type Config struct {
	RedisURL string
	// Retention is how long samples are kept: at least the longest rule
	// window.
	Retention time.Duration
	// RunController runs the CustomAutoscaler controller; without it only
	// POST /metrics is served and no Kubernetes API is needed.
	RunController bool
	// Kube reaches the Kubernetes API; needed only with RunController.
	Kube                    *rest.Config
	LeaderElectionNamespace string
	// Activations are the wakes of this process's activator.
	Activations *activation.Local
	// Decisions, when set, receives the decision record.
	Decisions reconciler.DecisionRecorder
}

// Autoscaling is POST /metrics and the controller, sharing one Redis client.
type Autoscaling struct {
	// Ingest serves POST /metrics.
	Ingest http.Handler
	// Samples stores pod samples as POST /metrics does, for serve's own
	// (those of Envoy's access logs).
	Samples ingest.Appender
	rdb     *redis.Client
	store   *store.Store
	mgr     manager.Manager
}

// New connects nothing yet: Redis is dialled on first use, and the
// controller starts in Run.
func New(cfg Config, reg prometheus.Registerer, log *slog.Logger) (*Autoscaling, error) {
	opts, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("parsing redis url: %w", err)
	}
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = 2*time.Second, 2*time.Second, 2*time.Second
	a := &Autoscaling{rdb: redis.NewClient(opts)}
	a.store = store.New(a.rdb, cfg.Retention)
	a.Samples = a.store
	a.Ingest = ingest.New(a.store, ingest.Options{Registerer: reg, Log: log.With("component", "ingest")})
	if !cfg.RunController {
		log.Warn("the CustomAutoscaler controller is disabled: samples are stored, nothing is scaled")
		return a, nil
	}
	a.mgr, err = reconciler.NewManager(cfg.Kube, reconciler.Options{
		Store: a.store, Registerer: reg, Log: logr.FromSlogHandler(log.Handler()).WithName("controller"),
		LeaderElection: true, LeaderElectionNamespace: cfg.LeaderElectionNamespace, Activations: cfg.Activations,
		Decisions: cfg.Decisions,
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// Run runs the controller, when enabled, until ctx ends, then closes Redis.
func (a *Autoscaling) Run(ctx context.Context) error {
	defer func() { _ = a.rdb.Close() }()
	if a.mgr == nil {
		<-ctx.Done()
		return nil
	}
	if err := a.mgr.Start(ctx); err != nil {
		return fmt.Errorf("running controller: %w", err)
	}
	return nil
}
