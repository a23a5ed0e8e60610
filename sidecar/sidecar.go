// Package sidecar is `nemesis sidecar`, the agent in every model pod: a
// meter of the pod's CPU, memory and disk and a pusher that sends one sample
// per interval to the controller's POST /metrics; in proxy mode also a
// reverse proxy on the pod port in front of the model that times and counts
// requests (in metering mode serve times them from Envoy's access logs).
package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nemesis-ml/nemesis/controller/podmetric"
	"github.com/nemesis-ml/nemesis/internal/httpserver"
	"github.com/nemesis-ml/nemesis/internal/openapi"
	"github.com/nemesis-ml/nemesis/sidecar/meter"
	"github.com/nemesis-ml/nemesis/sidecar/proxy"
	"github.com/nemesis-ml/nemesis/sidecar/push"
)

// Modes of the sidecar.
const (
	// ModeMeter meters the pod and stays out of the request path: the
	// Service targets the model's port.
	ModeMeter = "meter"
	// ModeProxy also proxies and times every request on the pod port, for
	// traffic that does not come through Envoy.
	ModeProxy = "proxy"
)

// Config is everything the sidecar needs.
type Config struct {
	// Mode is ModeMeter or ModeProxy.
	Mode string
	// Listen is the pod port that the Service targets (ModeProxy).
	Listen string
	// AdminListen serves /ready, /healthz and /metrics.
	AdminListen string
	// Model is the model's base URL on localhost.
	Model         *url.URL
	ModelProtocol string
	// ModelHealthPath is probed for /ready; empty means "the model port
	// accepts connections".
	ModelHealthPath string

	// Namespace and Pod name the pod in samples as namespace/pod.
	Namespace, Pod string

	// Controller is the controller's base URL; empty turns pushing off.
	Controller   string
	Token        string
	PushInterval time.Duration
	BatchSize    int
	BufferSize   int

	Meter meter.Config

	// ShutdownGrace is how long in-flight requests may take to finish
	// after SIGTERM.
	ShutdownGrace time.Duration
}

// Run serves until ctx ends, then drains: /ready fails, the pod port stops
// accepting, in-flight requests get ShutdownGrace to finish, the last
// samples are pushed, and Run returns.
func Run(ctx context.Context, log *slog.Logger, cfg Config) error {
	if cfg.PushInterval <= 0 {
		return fmt.Errorf("push interval %v: want more than 0", cfg.PushInterval)
	}
	id := cfg.Namespace + "/" + cfg.Pod
	reg := httpserver.NewRegistry()

	m, err := meter.New(cfg.Meter)
	if err != nil {
		return fmt.Errorf("starting the meter: %w", err)
	}
	log.Info("metering the pod", "pod", id, "source", m.Source(), "diskPaths", cfg.Meter.DiskPaths)

	var px *proxy.Proxy
	switch cfg.Mode {
	case ModeMeter:
	case ModeProxy:
		// Every request allocates in the proxy: collect garbage at four
		// times the live heap (a few MiB), not at twice, unless GOGC says
		// otherwise. The collector's work per request is a good part of the hop.
		if os.Getenv("GOGC") == "" {
			debug.SetGCPercent(400)
		}
		if px, err = proxy.New(proxy.Config{Model: cfg.Model, Protocol: cfg.ModelProtocol, Log: log, Registerer: reg}); err != nil {
			return fmt.Errorf("starting the proxy: %w", err)
		}
	default:
		return fmt.Errorf("mode %q: want %s or %s", cfg.Mode, ModeMeter, ModeProxy)
	}

	add := func(podmetric.Sample) {}
	var pusher *push.Pusher
	if cfg.Controller == "" {
		log.Warn("no controller URL: samples are not pushed, only exported on /metrics", "pod", id)
	} else {
		pusher, err = push.New(push.Config{
			Controller: cfg.Controller, Token: cfg.Token,
			BatchSize: cfg.BatchSize, BufferSize: cfg.BufferSize,
			Log: log, Registerer: reg,
		})
		if err != nil {
			return fmt.Errorf("starting the pusher: %w", err)
		}
		add = pusher.Add
	}
	smp := newSampler(id, px, m, add, log, reg)

	healthURL := ""
	if cfg.ModelHealthPath != "" {
		healthURL = cfg.Model.JoinPath(cfg.ModelHealthPath).String()
	}
	probe := newModelProbe(cfg.Model.Host, healthURL)
	var draining atomic.Bool
	admin := adminRoutes(reg,
		httpserver.Check{Name: "model", Run: probe.check},
		httpserver.Check{Name: "sidecar", Run: func(context.Context) error {
			if draining.Load() {
				return errDraining
			}
			return nil
		}},
	)

	var podL net.Listener
	if px != nil {
		if podL, err = net.Listen("tcp", cfg.Listen); err != nil {
			return fmt.Errorf("listening on the pod port %s: %w", cfg.Listen, err)
		}
	}
	adminL, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		if podL != nil {
			podL.Close()
		}
		return fmt.Errorf("listening on the admin port %s: %w", cfg.AdminListen, err)
	}

	// The admin server and the pusher outlive the drain: probes must see
	// "not ready" and the last samples must go out.
	var wg sync.WaitGroup
	adminCtx, stopAdmin := context.WithCancel(context.Background())
	defer stopAdmin()
	adminErr := make(chan error, 1)
	wg.Go(func() { adminErr <- httpserver.ServeListener(adminCtx, log, adminL, admin, time.Second) })
	pushCtx, stopPush := context.WithCancel(context.Background())
	defer stopPush()
	if pusher != nil {
		wg.Go(func() { pusher.Run(pushCtx) })
	}
	sampleCtx, stopSampling := context.WithCancel(context.Background())
	defer stopSampling()
	sampled := make(chan struct{})
	go func() { smp.run(sampleCtx, cfg.PushInterval); close(sampled) }()

	// In metering mode nothing is served on the pod port: served stays
	// empty and the drain has no requests to wait for.
	var srv *http.Server
	served := make(chan error, 1)
	if px != nil {
		srv = proxy.NewServer(px, log)
		go func() { served <- srv.Serve(podL) }()
		log.Info("sidecar listening", "mode", cfg.Mode, "pod", id, "addr", podL.Addr().String(), "admin", adminL.Addr().String(), "model", cfg.Model.String())
	} else {
		log.Info("sidecar metering", "mode", cfg.Mode, "pod", id, "admin", adminL.Addr().String(), "model", cfg.Model.String())
	}

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-served:
		runErr = fmt.Errorf("serving the pod port: %w", err)
	case err := <-adminErr:
		runErr = fmt.Errorf("serving the admin port: %w", err)
	}

	draining.Store(true)
	if srv != nil {
		log.Info("draining", "pod", id, "inFlight", px.InFlight(), "grace", cfg.ShutdownGrace)
		graceCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
		defer cancel()
		if err := srv.Shutdown(graceCtx); err != nil {
			log.Warn("grace period over, closing the connections left", "pod", id, "err", err)
			_ = srv.Close()
		}
	}
	stopSampling()
	<-sampled
	stopPush()
	stopAdmin()
	wg.Wait()
	if runErr != nil && !errors.Is(runErr, http.ErrServerClosed) {
		return runErr
	}
	log.Info("sidecar stopped", "pod", id)
	return nil
}

// adminRoutes is the admin port's API. internal/openapi's sidecar.json
// describes every route on it; admin_test.go fails when one is missing.
func adminRoutes(reg *prometheus.Registry, checks ...httpserver.Check) *httpserver.Routes {
	admin := httpserver.Mux(reg, checks...)
	// /ready is the path the manifests probe; it answers as /readyz does.
	readyz, _ := admin.Handler(&http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/readyz"}})
	admin.Handle("GET /ready", readyz)
	admin.Handle("GET /openapi.json", openapi.Handler(openapi.Sidecar()))
	return admin
}
