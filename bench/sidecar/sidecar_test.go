// Package sidecar_test measures what the sidecar costs: the same wrk load
// straight to a model (the baseline) and, in the same run, through an
// ingress Envoy with the sidecar metering beside the model (nothing in the
// path), with `nemesis sidecar --mode proxy` in front of it, and with Envoy
// itself as that sidecar (one listener, one cluster); then the two
// sidecars alone. Ratios of throughput and added p99 against direct.
//
//	make bench   # or: go test -run '^$' -bench . -benchtime 1x ./bench/sidecar
package sidecar_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nemesis-ml/nemesis/bench/internal/loadgen"
	"github.com/nemesis-ml/nemesis/internal/dev/servers"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
	"github.com/nemesis-ml/nemesis/sidecar"
	"github.com/nemesis-ml/nemesis/sidecar/meter"
)

const (
	connections = 32
	duration    = "5s"
)

func BenchmarkSidecar(b *testing.B) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		b.Fatalf("wrk not found (make tools installs it): %v", err)
	}
	for _, delay := range []time.Duration{0, 10 * time.Millisecond} {
		b.Run(fmt.Sprintf("model-delay=%v", delay), func(b *testing.B) {
			model := startModel(b, delay)
			proxied := startSidecar(b, model)
			envoySidecar := startEnvoy(b, "envoy-sidecar", map[string]*url.URL{"model": model})
			ingress := startEnvoy(b, "ingress", map[string]*url.URL{
				"metering": model, "proxy": proxied, "envoy-sidecar": envoySidecar["model"],
			})
			paths := []struct{ name, url string }{
				{"Envoy, sidecar metering beside the model", ingress["metering"].String()},
				{"Envoy, nemesis sidecar in proxy mode", ingress["proxy"].String()},
				{"Envoy, Envoy as the sidecar", ingress["envoy-sidecar"].String()},
				{"nemesis sidecar alone (proxy mode)", proxied.String()},
				{"Envoy as the sidecar alone", envoySidecar["model"].String()},
			}
			for range b.N {
				direct := loadgen.Run(b, wrk, model.String()+"/predict", connections, duration)
				b.Logf("direct %.0f req/s p50 %v p99 %v", direct.RPS, direct.P50, direct.P99)
				for i, p := range paths {
					r := loadgen.Run(b, wrk, p.url+"/predict", connections, duration)
					ratio := r.RPS / direct.RPS
					added := r.P99 - direct.P99
					if i == 0 {
						// The product's path: what metering costs a request.
						b.ReportMetric(ratio, "metering-throughput-ratio")
						b.ReportMetric(float64(added)/float64(time.Millisecond), "metering-added-p99-ms")
					}
					if i == 3 {
						b.ReportMetric(ratio, "proxy-throughput-ratio")
					}
					b.Logf("%-42s %6.0f req/s p50 %8v p99 %8v: throughput ratio %.3f, added p99 %v", p.name, r.RPS, r.P50, r.P99, ratio, added)
				}
				b.ReportMetric(0, "ns/op") // one wrk run per path is the measurement, not b.N
			}
		})
	}
}

// startEnvoy runs an Envoy with one plain HTTP listener per upstream,
// routing everything to it, and returns the listeners' URLs by name.
func startEnvoy(b *testing.B, name string, upstreams map[string]*url.URL) map[string]*url.URL {
	var listeners, clusters strings.Builder
	out := map[string]*url.URL{}
	for up, target := range upstreams {
		port := testenv.Port(b)
		out[up] = &url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", port)}
		host, tport, _ := strings.Cut(target.Host, ":")
		fmt.Fprintf(&listeners, `
  - name: %[1]s
    address: {socket_address: {address: 127.0.0.1, port_value: %[2]d}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: %[1]s
          route_config:
            virtual_hosts:
            - {name: all, domains: ["*"], routes: [{match: {prefix: "/"}, route: {cluster: %[1]s}}]}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}`, up, port)
		fmt.Fprintf(&clusters, `
  - name: %[1]s
    type: STATIC
    connect_timeout: 1s
    circuit_breakers: {thresholds: [{max_connections: 100000, max_pending_requests: 100000, max_requests: 100000}]}
    load_assignment:
      cluster_name: %[1]s
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %[2]s, port_value: %[3]s}}}}]}]`, up, host, tport)
	}
	dir := testenv.Dir(b, name)
	bootstrap := filepath.Join(dir, "bootstrap.yaml")
	config := "static_resources:\n  listeners:" + listeners.String() + "\n  clusters:" + clusters.String() + "\n"
	if err := os.WriteFile(bootstrap, []byte(config), 0o644); err != nil {
		b.Fatal(err)
	}
	e, err := servers.StartEnvoy(context.Background(), servers.EnvoyConfig{Bootstrap: bootstrap, Dir: dir, AdminPort: testenv.Port(b), LogLevel: "warn"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = e.Stop() })
	for _, u := range out {
		waitUp(b, u.String())
	}
	return out
}

// startModel runs a stand-in model server that answers a small JSON
// prediction after delay.
func startModel(b *testing.B, delay time.Duration) *url.URL {
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.Port(b))
	srv := &http.Server{Addr: addr, ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if delay > 0 {
			time.Sleep(delay)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"predictions":[{"class":"tabby cat","score":0.93}]}`))
	})}
	go func() { _ = srv.ListenAndServe() }()
	b.Cleanup(func() { _ = srv.Close() })
	waitUp(b, "http://"+addr)
	return &url.URL{Scheme: "http", Host: addr}
}

// startSidecar runs the sidecar as `nemesis sidecar` does, metering this
// process, without a controller.
func startSidecar(b *testing.B, model *url.URL) *url.URL {
	pod := fmt.Sprintf("127.0.0.1:%d", testenv.Port(b))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- sidecar.Run(ctx, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})), sidecar.Config{
			Mode: sidecar.ModeProxy, Listen: pod, AdminListen: fmt.Sprintf("127.0.0.1:%d", testenv.Port(b)),
			Model: model, ModelProtocol: "auto", Namespace: "bench", Pod: "model-0",
			PushInterval: time.Second, ShutdownGrace: 5 * time.Second,
			Meter: meter.Config{Source: meter.SourceProcesses, PID: os.Getpid()},
		})
	}()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	})
	waitUp(b, "http://"+pod)
	return &url.URL{Scheme: "http", Host: pod}
}

func waitUp(b *testing.B, u string) {
	c := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := c.Get(u)
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s not up: %v", u, err)
		}
	}
}
