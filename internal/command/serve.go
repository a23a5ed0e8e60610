package command

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nemesis-ml/nemesis/console"
	"github.com/nemesis-ml/nemesis/controller"
	"github.com/nemesis-ml/nemesis/controller/activation"
	"github.com/nemesis-ml/nemesis/controller/decisions"
	"github.com/nemesis-ml/nemesis/internal/database"
	"github.com/nemesis-ml/nemesis/internal/httpauth"
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
	decisionFlags
	Listen               string `help:"Address of the HTTP APIs, health and metrics." default:"127.0.0.1:8080" env:"NEMESIS_LISTEN"`
	XDSListen            string `help:"Address of the xDS (ADS) gRPC server that Envoy connects to." default:"127.0.0.1:18000" env:"NEMESIS_XDS_LISTEN"`
	EnvoyListenerAddress string `help:"Address Envoy takes client traffic on." default:"127.0.0.1" env:"NEMESIS_ENVOY_LISTENER_ADDRESS"`
	EnvoyListenerPort    uint32 `help:"Port Envoy takes client traffic on." default:"10000" env:"NEMESIS_ENVOY_LISTENER_PORT"`
	EnvoyTrustedHops     uint32 `help:"How many proxies in front of Envoy append to X-Forwarded-For; 0 logs and routes on the connection's peer address." default:"0" env:"NEMESIS_ENVOY_TRUSTED_HOPS"`
	authFlags
	ShutdownGrace time.Duration `help:"How long requests in flight may take to finish on SIGTERM." default:"20s" env:"NEMESIS_SHUTDOWN_GRACE"`
}

func (c Serve) Run(ctx context.Context, log *slog.Logger) error {
	auth, err := c.authorizer(log)
	if err != nil {
		return err
	}
	grpcTLS, err := c.grpcTLS(log)
	if err != nil {
		return err
	}
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
		AccessLogCluster: c.AccessLogCluster, AccessLogPath: c.AccessLogFile, TrustedHops: c.EnvoyTrustedHops,
	})
	reg := httpserver.NewRegistry()
	reg.MustRegister(cp.Server.Collector())
	activations := activation.NewLocal()
	record, err := c.decisionFlags.build(pool, reg, log)
	if err != nil {
		return err
	}
	autoscalingCfg := c.autoscalingFlags.config(kubeCfg, activations)
	autoscalingCfg.Decisions = record.writer
	autoscaling, err := controller.New(autoscalingCfg, reg, log)
	if err != nil {
		return err
	}
	logs, err := c.proxyLogFlags.build(ctx, pool, c.DatabaseURL, autoscaling.Samples, cp.Server.Status, reg, log, c.XDSListen)
	if err != nil {
		return err
	}
	defer logs.close()
	routes, err := kubesource.New(kubeCfg, scheme, log.With("component", "kubesource"), func(r map[string][]ir.Route) {
		logs.routesChanged(r)
		cp.RoutesChanged(ctx, r)
	})
	if err != nil {
		return err
	}
	// Readiness follows PostgreSQL only: with Redis down the settings API
	// and xDS still work, and POST /metrics answers 503 until it is back.
	settingsHandler, err := api.New(log.With("component", "api"), store, cp, reg)
	if err != nil {
		return err
	}
	settingsAPI := http.NewServeMux()
	settingsHandler.Register(settingsAPI)
	guarded := api.Guarded(auth, settingsAPI)
	mux := c.routes(reg, httpserver.Check{Name: "postgres", Run: pool.Ping}, auth, settingsHandler, guarded, autoscaling.Ingest, logs.query, record.query)
	kube, err := client.New(kubeCfg, client.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("creating the console's kubernetes client: %w", err)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		settingsdb.Watch(ctx, pool, log.With("component", "settings"), func(env string) error {
			return cp.SettingsChanged(ctx, env)
		})
		return nil
	})
	g.Go(func() error { return routes.Run(ctx) })
	g.Go(func() error { return autoscaling.Run(ctx) })
	activate, err := c.newActivator(ctx, kubeCfg, scheme, cp, activations, record.released, reg, log.With("component", "activator"))
	if err != nil {
		return err
	}
	ui, err := console.New(console.Config{
		Kube: kube, Pool: pool, Decisions: record.query, Logs: logs.query, Settings: store,
		Envoys: cp.Server.Status, Held: activate, SettingsAPI: guarded, Auth: auth, Log: log.With("component", "console"),
	})
	if err != nil {
		return err
	}
	ui.Register(mux)
	g.Go(func() error {
		if grpcTLS == nil {
			return cp.Server.Serve(ctx, xdsListener, activate.Register, logs.service.Register)
		}
		return cp.Server.ServeTLS(ctx, xdsListener, grpcTLS, activate.Register, logs.service.Register)
	})
	g.Go(func() error { return logs.sink.Run(ctx) })
	g.Go(func() error { return logs.retention.Run(ctx) })
	g.Go(func() error { return logs.runTraffic(ctx) })
	g.Go(func() error { return record.writer.Run(ctx) })
	g.Go(func() error { return record.retention.Run(ctx) })
	g.Go(func() error {
		return httpserver.Serve(ctx, log, c.Listen, mux, c.ShutdownGrace)
	})
	return g.Wait()
}

// routes is serve's HTTP API but the console's routes (console.Register adds
// them). internal/openapi's serve.json describes every route on it;
// routes_test.go fails when one is missing. /healthz, /readyz and
// /openapi.json (what the API looks like, no data) need no token; everything
// else needs its scope.
func (c Serve) routes(reg *prometheus.Registry, ready httpserver.Check, auth *httpauth.Authorizer, settingsAPI *api.Handler, guarded, ingest, logs, decisionLog http.Handler) *httpserver.Routes {
	mux := httpserver.GuardedMux(reg, func(h http.Handler) http.Handler { return auth.Require(httpauth.Read, h) }, ready)
	// Each of the settings API's patterns, served by guarded (the one place
	// their scopes are given), so that the mux records every route.
	settingsAPI.Register(servedBy{mux, guarded})
	mux.Handle("POST /metrics", auth.Require(httpauth.MetricsIngest, ingest))
	mux.Handle("GET /proxy/logs", auth.Require(httpauth.Read, logs))
	mux.Handle(decisions.Pattern, auth.Require(httpauth.Read, decisionLog))
	mux.Handle("GET /openapi.json", openapi.Handler(openapi.Serve()))
	return mux
}

// servedBy registers each pattern on mux with handler h instead of the one
// given.
type servedBy struct {
	mux *httpserver.Routes
	h   http.Handler
}

func (s servedBy) Handle(pattern string, _ http.Handler) { s.mux.Handle(pattern, s.h) }

// connectAndMigrate retries until PostgreSQL answers and the schema is
// current, so the control plane can start before its database does. It
// migrates on a pool of its own, without the statement timeout of the
// serving pools: building an index on a large table takes what it takes.
func connectAndMigrate(ctx context.Context, log *slog.Logger, url string) error {
	// Not wait.ExponentialBackoff: with a Cap it stops retrying once the
	// delay reaches the cap, about 6 s in, and a pod whose PostgreSQL is
	// still creating its database (a fresh install) would exit.
	delay := 200 * time.Millisecond
	for {
		p, err := database.OpenPool(ctx, url, database.PoolConfig{Name: "nemesis-migrate", MaxConns: 1})
		if err == nil {
			err = database.Migrate(ctx, p, log)
			p.Close()
			if err == nil {
				return nil
			}
		}
		log.Warn("database not ready, retrying", "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for database: %w", ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}
