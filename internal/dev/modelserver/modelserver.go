// Package modelserver is what the development models (demomodel,
// textmodel) share as servers: probes that follow the model's loading, a
// start-up delay standing for loading weights, and listening at once while
// the model loads in the background.
package modelserver

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/nemesis-ml/nemesis/internal/httpjson"
	"github.com/nemesis-ml/nemesis/internal/httpserver"
)

// Probes serves GET /healthz (alive) and GET /ready: 503 until loaded says
// the model is loaded.
func Probes(mux *http.ServeMux, loaded func() bool) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		httpjson.Write(w, http.StatusOK, map[string]string{"status": "alive"})
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		if !loaded() {
			httpjson.Write(w, http.StatusServiceUnavailable, map[string]string{"status": "loading"})
			return
		}
		httpjson.Write(w, http.StatusOK, map[string]string{"status": "ready"})
	})
}

// StartupDelay waits d, as a real server spends time loading its weights,
// or until ctx ends.
func StartupDelay(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// Run listens on addr at once, runs load in the background and serves h
// until ctx ends, then lets requests in flight finish.
func Run(ctx context.Context, log *slog.Logger, addr string, load func(context.Context) error, h http.Handler) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", addr, err)
	}
	go func() {
		if err := load(ctx); err != nil && ctx.Err() == nil {
			log.Error("loading the model", "err", err)
		}
	}()
	return httpserver.ServeListener(ctx, log, l, h, 30*time.Second)
}
