package command

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/nemesis-ml/nemesis/controller"
	"github.com/nemesis-ml/nemesis/controller/activation"
	"github.com/nemesis-ml/nemesis/internal/database"
	"github.com/nemesis-ml/nemesis/internal/httpserver"
	"github.com/nemesis-ml/nemesis/internal/kubescheme"
	"github.com/nemesis-ml/nemesis/internal/openapi"
	"github.com/nemesis-ml/nemesis/xds"
	"github.com/nemesis-ml/nemesis/xds/api"
	"github.com/nemesis-ml/nemesis/xds/ir"
	"github.com/nemesis-ml/nemesis/xds/kubesource"
	"github.com/nemesis-ml/nemesis/xds/settingsdb"
	"github.com/nemesis-ml/nemesis/xds/translate"
)

// Serve runs the control plane: the settings API and xDS server, the access-log
// sink and its query API, the activator and the CustomAutoscaler controller.
type Serve struct {
	databaseFlags
	kubeFlags
	autoscalingFlags
	activatorFlags
	proxyLogFlags
	Listen               string        `help:"Address of the HTTP APIs, health and metrics." default:"127.0.0.1:8080" env:"NEMESIS_LISTEN"`
	XDSListen            string        `help:"Address of the xDS (ADS) gRPC server that Envoy connects to." default:"127.0.0.1:18000" env:"NEMESIS_XDS_LISTEN"`
	EnvoyListenerAddress string        `help:"Address Envoy takes client traffic on." default:"127.0.0.1" env:"NEMESIS_ENVOY_LISTENER_ADDRESS"`
	EnvoyListenerPort    uint32        `help:"Port Envoy takes client traffic on." default:"10000" env:"NEMESIS_ENVOY_LISTENER_PORT"`
	Token                string        `help:"Bearer token required by the APIs' mutating calls; empty disables the check." env:"NEMESIS_TOKEN"`
	ShutdownGrace        time.Duration `help:"How long requests in flight may take to finish on SIGTERM." default:"20s" env:"NEMESIS_SHUTDOWN_GRACE"`
}

func (c Serve) Run(ctx context.Context, log *slog.Logger) error {
	kubeCfg, err := c.restConfig()
	if err != nil {
		return err
	}
	scheme, err := kubescheme.New()
	if err != nil {
		return err
	}
	xdsListener, err := net.Listen("tcp", c.XDSListen)
	if err != nil {
		return fmt.Errorf("listening for xds on %s: %w", c.XDSListen, err)
	}
	if err := connectAndMigrate(ctx, log, c.DatabaseURL); err != nil {
		return err
	}
	// The settings API, the log writers and /readyz share this pool; the
	// proxy log queries have their own (proxyLogFlags.build).
	pool, err := database.OpenPool(ctx, c.DatabaseURL, database.PoolConfig{Name: "nemesis-serve", StatementTimeout: 30 * time.Second})
	if err != nil {
		return err
	}
	defer pool.Close()

	store := settingsdb.NewStore(pool)
	cp := xds.New(log.With("component", "xds"), store, translate.Options{
		ListenerAddress: c.EnvoyListenerAddress, ListenerPort: c.EnvoyListenerPort, HoldTimeout: c.ActivatorHoldTimeout,
		AccessLogCluster: c.AccessLogCluster,
	})
	routes, err := kubesource.New(kubeCfg, scheme, log.With("component", "kubesource"), func(r map[string][]ir.Route) {
		cp.RoutesChanged(ctx, r)
	})
	if err != nil {
		return err
	}

	reg := httpserver.NewRegistry()
	reg.MustRegister(cp.Server.Collector())
	activations := activation.NewLocal()
	autoscaling, err := controller.New(c.autoscalingFlags.config(kubeCfg, activations), reg, log)
	if err != nil {
		return err
	}
	logs, err := c.proxyLogFlags.build(ctx, pool, c.DatabaseURL, reg, log, c.XDSListen)
	if err != nil {
		return err
	}
	defer logs.close()
	// Readiness follows PostgreSQL only: with Redis down the settings API
	// and xDS still work, and POST /metrics answers 503 until it is back.
	settingsAPI, err := api.New(log.With("component", "api"), store, cp, reg)
	if err != nil {
		return err
	}
	mux := c.routes(reg, httpserver.Check{Name: "postgres", Run: pool.Ping}, settingsAPI, autoscaling.Ingest, logs.query)

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		settingsdb.Watch(ctx, pool, log.With("component", "settings"), func(env string) error {
			return cp.SettingsChanged(ctx, env)
		})
		return nil
	})
	g.Go(func() error { return routes.Run(ctx) })
	g.Go(func() error { return autoscaling.Run(ctx) })
	activate, err := c.newActivator(ctx, kubeCfg, scheme, cp, activations, reg, log.With("component", "activator"))
	if err != nil {
		return err
	}
	g.Go(func() error { return cp.Server.Serve(ctx, xdsListener, activate.Register, logs.service.Register) })
	g.Go(func() error { return logs.sink.Run(ctx) })
	g.Go(func() error { return logs.retention.Run(ctx) })
	g.Go(func() error {
		return httpserver.Serve(ctx, log, c.Listen, mux, c.ShutdownGrace)
	})
	return g.Wait()
}

// routes is serve's HTTP API. internal/openapi's serve.json describes every
// route on it; routes_test.go fails when one is missing.
func (c Serve) routes(reg *prometheus.Registry, ready httpserver.Check, settingsAPI *api.Handler, ingest, logs http.Handler) *httpserver.Routes {
	mux := httpserver.Mux(reg, ready)
	settingsAPI.Register(mux, c.Token)
	mux.Handle("POST /metrics", ingest) // checks its own --metrics-token
	mux.Handle("GET /proxy/logs", logs)
	mux.Handle("GET /openapi.json", openapi.Handler(openapi.Serve()))
	return mux
}

// connectAndMigrate retries until PostgreSQL answers and the schema is
// current, so the control plane can start before its database does. It
// migrates on a pool of its own, without the statement timeout of the
// serving pools: building an index on a large table takes what it takes.
func connectAndMigrate(ctx context.Context, log *slog.Logger, url string) error {
	backoff := wait.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Cap: 5 * time.Second, Steps: math.MaxInt32}
	err := wait.ExponentialBackoffWithContext(ctx, backoff, func(ctx context.Context) (bool, error) {
		p, err := database.OpenPool(ctx, url, database.PoolConfig{Name: "nemesis-migrate", MaxConns: 1})
		if err == nil {
			err = database.Migrate(ctx, p, log)
			p.Close()
			if err == nil {
				return true, nil
			}
		}
		log.Warn("database not ready, retrying", "err", err)
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for database: %w", err)
	}
	return nil
}
