package sidecar

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nemesis-ml/nemesis/controller/podmetric"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
	"github.com/nemesis-ml/nemesis/sidecar/meter"
	"github.com/nemesis-ml/nemesis/sidecar/push/pushtest"
)

const interval = time.Second

var client = &http.Client{Timeout: 10 * time.Second}

// startModel runs a model server that answers after delay and whose
// /health answers healthy's status.
func startModel(t *testing.T, delay time.Duration, healthy *atomic.Int32) *url.URL {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.Port(t))
	srv := &http.Server{Addr: addr, ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			w.WriteHeader(int(healthy.Load()))
			return
		}
		time.Sleep(delay)
		_, _ = w.Write([]byte(`{"class":"cat"}`))
	})}
	go func() { _ = srv.ListenAndServe() }()
	t.Cleanup(func() { _ = srv.Close() })
	return &url.URL{Scheme: "http", Host: addr}
}

type running struct {
	pod, admin string
	done       chan error
}

// startSidecar runs the sidecar with cfg completed by free ports and this
// process as the metered process tree, until the test ends.
func startSidecar(t *testing.T, cfg Config) *running {
	t.Helper()
	if cfg.Mode == "" {
		cfg.Mode = ModeProxy
	}
	cfg.Listen = fmt.Sprintf("127.0.0.1:%d", testenv.Port(t))
	cfg.AdminListen = fmt.Sprintf("127.0.0.1:%d", testenv.Port(t))
	cfg.Namespace, cfg.Pod = "models", "resnet-0"
	cfg.PushInterval = interval
	cfg.Meter = meter.Config{Source: meter.SourceProcesses, PID: os.Getpid(), DiskPaths: []string{t.TempDir()}}
	cfg.ShutdownGrace = 5 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{pod: "http://" + cfg.Listen, admin: "http://" + cfg.AdminListen, done: make(chan error, 1)}
	go func() {
		r.done <- Run(ctx, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), cfg)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-r.done; err != nil {
			t.Errorf("sidecar: %v", err)
		}
	})
	waitStatus(t, r.admin+"/healthz", http.StatusOK)
	return r
}

func waitStatus(t *testing.T, u string, want int) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.Get(u)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == want {
				return string(body)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s never answered %d (last: %v)", u, want, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func get(t *testing.T, u string) {
	t.Helper()
	resp, err := client.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", u, resp.StatusCode)
	}
}

func TestASampleArrivesEveryInterval(t *testing.T) {
	var healthy atomic.Int32
	healthy.Store(http.StatusOK)
	model := startModel(t, 50*time.Millisecond, &healthy)
	rcv := pushtest.Start(t, "s3cret")
	sc := startSidecar(t, Config{Model: model, Controller: rcv.URL(), Token: "s3cret"})

	// The sidecar's timing lies between the model's own 50 ms and what the
	// client saw, which adds the hop and the machine's load on top.
	var slowest time.Duration
	for range 10 {
		start := time.Now()
		get(t, sc.pod+"/v1/models/resnet:predict")
		slowest = max(slowest, time.Since(start))
	}
	got := rcv.WaitFor(5, 10*time.Second)
	checkEveryInterval(t, got)
	var requests float64
	for _, s := range got {
		if s.ID != "models/resnet-0" {
			t.Fatalf("sample id %q, want models/resnet-0", s.ID)
		}
		if s.MemoryUsage <= 0 {
			t.Fatalf("sample %+v has no memory: this test process is metered", s)
		}
		requests += s.RequestCount
		if ceiling := float64(slowest) / float64(time.Millisecond); s.RequestCount > 0 &&
			(s.AverageResponseTime < 50 || s.AverageResponseTime > ceiling) {
			t.Fatalf("average response time %.1f ms, want between the model's 50 ms and the client's slowest %.1f ms", s.AverageResponseTime, ceiling)
		}
	}
	if requests != 10 {
		t.Fatalf("samples count %v requests, want 10", requests)
	}
}

// In metering mode the sidecar leaves the pod port alone and its samples
// say they carry no request metrics (serve times requests from Envoy's logs).
func TestMeteringModeStaysOutOfTheRequestPath(t *testing.T) {
	var healthy atomic.Int32
	healthy.Store(http.StatusOK)
	rcv := pushtest.Start(t, "")
	sc := startSidecar(t, Config{Mode: ModeMeter, Model: startModel(t, 0, &healthy), Controller: rcv.URL()})
	waitStatus(t, sc.admin+"/ready", http.StatusOK)
	if conn, err := net.DialTimeout("tcp", strings.TrimPrefix(sc.pod, "http://"), time.Second); err == nil {
		conn.Close()
		t.Fatal("the pod port accepts connections in metering mode")
	}
	for _, s := range rcv.WaitFor(2, 10*time.Second) {
		if s.Source != podmetric.SourceMeter || s.MemoryUsage <= 0 || s.RequestCount != 0 || s.RequestRate != 0 {
			t.Fatalf("sample %+v: want source meter, memory metered, no requests", s)
		}
	}
}

func TestBufferedSamplesArriveAfterTheControllerComesBack(t *testing.T) {
	var healthy atomic.Int32
	healthy.Store(http.StatusOK)
	rcv := pushtest.Start(t, "")
	startSidecar(t, Config{Model: startModel(t, 0, &healthy), Controller: rcv.URL()})

	rcv.WaitFor(2, 10*time.Second)
	rcv.Stop()
	before := len(rcv.Samples())
	time.Sleep(10 * time.Second)
	rcv.Restart()
	// Ten samples were taken while it was down; they come with the next ones.
	got := rcv.WaitFor(before+12, 20*time.Second)
	checkEveryInterval(t, got)
}

// checkEveryInterval asserts that the samples are one per interval, in
// order, none missing.
func checkEveryInterval(t *testing.T, samples []podmetric.Sample) {
	t.Helper()
	for i := 1; i < len(samples); i++ {
		gap := samples[i].ReceivedAt.Sub(samples[i-1].ReceivedAt)
		if gap < interval/2 || gap > interval*3/2 {
			t.Fatalf("samples %d and %d are %v apart, want one every %v", i-1, i, gap, interval)
		}
	}
}

func TestReadyFollowsTheModelsHealth(t *testing.T) {
	var healthy atomic.Int32
	healthy.Store(http.StatusServiceUnavailable)
	sc := startSidecar(t, Config{Model: startModel(t, 0, &healthy), ModelHealthPath: "/health"})

	// /ready names the failed check, never its error text.
	body := waitStatus(t, sc.admin+"/ready", http.StatusServiceUnavailable)
	if !strings.Contains(body, `"failed":["model"]`) || strings.Contains(body, "503") {
		t.Fatalf("/ready says %s, want the failed check named and nothing more", body)
	}
	healthy.Store(http.StatusOK)
	waitStatus(t, sc.admin+"/ready", http.StatusOK)
	get(t, sc.pod+"/")
	metrics := waitStatus(t, sc.admin+"/metrics", http.StatusOK)
	for _, m := range []string{`nemesis_sidecar_requests_total{code="200"} 1`, "nemesis_sidecar_requests_in_flight 0", "nemesis_sidecar_request_duration_seconds_count 1"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %q", m)
		}
	}
}

func TestReadyWithoutHealthPathChecksTheModelPort(t *testing.T) {
	var healthy atomic.Int32
	healthy.Store(http.StatusOK)
	model := startModel(t, 0, &healthy)
	down := &url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", testenv.Port(t))}
	up := startSidecar(t, Config{Model: model})
	notUp := startSidecar(t, Config{Model: down})
	waitStatus(t, up.admin+"/ready", http.StatusOK)
	if body := waitStatus(t, notUp.admin+"/ready", http.StatusServiceUnavailable); !strings.Contains(body, `"failed":["model"]`) {
		t.Fatalf("/ready says %s, want the model check named", body)
	}
}
