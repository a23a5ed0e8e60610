// Package httpserver runs Nemesis's HTTP servers: health and readiness
// endpoints, Prometheus metrics, timeouts and graceful shutdown.
package httpserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check reports whether a dependency is usable; nil means ready.
type Check struct {
	Name string
	Run  func(ctx context.Context) error
}

// Routes is an http.ServeMux that remembers the patterns registered on it,
// so that a test can hold a server's routes against its OpenAPI document.
type Routes struct {
	*http.ServeMux
	patterns []string
}

// Handle registers handler for pattern, as http.ServeMux.Handle does.
func (m *Routes) Handle(pattern string, handler http.Handler) {
	m.patterns = append(m.patterns, pattern)
	m.ServeMux.Handle(pattern, handler)
}

// HandleFunc registers f for pattern, as http.ServeMux.HandleFunc does.
func (m *Routes) HandleFunc(pattern string, f func(http.ResponseWriter, *http.Request)) {
	m.Handle(pattern, http.HandlerFunc(f))
}

// Patterns returns the registered patterns in the order they were added.
func (m *Routes) Patterns() []string { return slices.Clone(m.patterns) }

// Mux returns a mux serving /healthz (the process is alive), /readyz (every
// check passes) and /metrics (the registry), to which callers add their APIs.
func Mux(reg *prometheus.Registry, checks ...Check) *Routes {
	return GuardedMux(reg, func(h http.Handler) http.Handler { return h }, checks...)
}

// GuardedMux is Mux with /metrics behind guard (an authorization check).
// /readyz names the checks that failed, never their errors: those may hold
// host names and users, and readiness probes need no credential.
func GuardedMux(reg *prometheus.Registry, guard func(http.Handler) http.Handler, checks ...Check) *Routes {
	mux := &Routes{ServeMux: http.NewServeMux()}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		failed := []string{}
		for _, c := range checks {
			if err := c.Run(ctx); err != nil {
				failed = append(failed, c.Name)
			}
		}
		w.Header().Set("Content-Type", "application/json")
		if len(failed) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			_ = json.NewEncoder(w).Encode(map[string]any{"status": "not ready", "failed": failed})
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"status": "ready"})
	})
	mux.Handle("GET /metrics", guard(promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})))
	return mux
}

// NewRegistry returns a Prometheus registry with the Go runtime and process
// collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Serve listens on addr and serves handler until ctx ends, then stops taking
// connections and lets requests in flight finish within grace.
func Serve(ctx context.Context, log *slog.Logger, addr string, handler http.Handler, grace time.Duration) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", addr, err)
	}
	return ServeListener(ctx, log, l, handler, grace)
}

// ServeListener is Serve on a listener the caller opened.
func ServeListener(ctx context.Context, log *slog.Logger, l net.Listener, handler http.Handler, grace time.Duration) error {
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	log.Info("http server listening", "addr", l.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("serving http: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutting down http server: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving http: %w", err)
	}
	log.Info("http server stopped", "addr", l.Addr().String())
	return nil
}
