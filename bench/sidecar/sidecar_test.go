// Package sidecar_test measures what the sidecar costs: the same wrk load
// straight to a model and through `nemesis sidecar` in front of it, in the
// same run, reported as ratios against the direct baseline.
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
	"testing"
	"time"

	"github.com/nemesis-ml/nemesis/bench/internal/loadgen"
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
			for range b.N {
				direct := loadgen.Run(b, wrk, model.String()+"/predict", connections, duration)
				through := loadgen.Run(b, wrk, proxied.String()+"/predict", connections, duration)
				ratio := through.RPS / direct.RPS
				added := through.P99 - direct.P99
				b.ReportMetric(ratio, "throughput-ratio")
				b.ReportMetric(float64(added)/float64(time.Millisecond), "added-p99-ms")
				b.ReportMetric(0, "ns/op") // one wrk run per side is the measurement, not b.N
				b.Logf("direct %.0f req/s p50 %v p99 %v; through the sidecar %.0f req/s p50 %v p99 %v; throughput ratio %.3f, added p50 %v, added p99 %v",
					direct.RPS, direct.P50, direct.P99, through.RPS, through.P50, through.P99, ratio, through.P50-direct.P50, added)
			}
		})
	}
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
			Listen: pod, AdminListen: fmt.Sprintf("127.0.0.1:%d", testenv.Port(b)),
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
