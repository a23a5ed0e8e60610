// Package proxylogs_test measures what proxy logging costs and carries:
// Envoy with the gRPC access log on against off, the sink's rows per second
// against a raw COPY of the same rows, and GET /proxy/logs pages on five
// million rows against an unfiltered newest-first page. Figures are ratios
// against the baseline measured in the same run.
//
//	make bench   # or: go test -run '^$' -bench . -benchtime 1x ./bench/proxylogs
package proxylogs_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nemesis-ml/nemesis/bench/internal/cpu"
	"github.com/nemesis-ml/nemesis/bench/internal/loadgen"
	"github.com/nemesis-ml/nemesis/extproc/accesslog"
	"github.com/nemesis-ml/nemesis/extproc/logsink"
	"github.com/nemesis-ml/nemesis/internal/database"
	"github.com/nemesis-ml/nemesis/internal/dev/servers"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
	"github.com/nemesis-ml/nemesis/xds"
	"github.com/nemesis-ml/nemesis/xds/ir"
	"github.com/nemesis-ml/nemesis/xds/settingsdb"
	"github.com/nemesis-ml/nemesis/xds/translate"
)

func TestMain(m *testing.M) {
	if addr := os.Getenv(modelEnv); addr != "" {
		srv := &http.Server{Addr: addr, ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(answer)}
		fmt.Fprintln(os.Stderr, srv.ListenAndServe())
		os.Exit(1)
	}
	testenv.Run(m)
}

const (
	connections = 32
	duration    = "3s"
	rounds      = 5 // off, on, discarded, off, …: drift on a shared machine hits all three
)

// BenchmarkEnvoyAccessLog: wrk through Envoy to one model, with the access
// log streaming to the sink (on) and without it (off).
func BenchmarkEnvoyAccessLog(b *testing.B) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		b.Fatalf("wrk not found (make tools installs it): %v", err)
	}
	_, url := testenv.Database(b)
	pool := openPool(b, url)
	model := startModel(b)
	off, _, offEnvoy := startEnvoyStack(b, pool, model, "", nil)
	on, sink, onEnvoy := startEnvoyStack(b, pool, model, "nemesis-xds", nil)
	// Envoy's own share: entries streamed and decoded, rows thrown away,
	// as when PostgreSQL runs on another machine than Envoy.
	discarded, _, discEnvoy := startEnvoyStack(b, pool, model, "nemesis-xds", discard{})
	for range b.N {
		var offRes, onRes, discRes []loadgen.Result
		var ratios, discRatios []float64
		var offCPU, onCPU, discCPU usage
		for range rounds {
			offRes = append(offRes, offCPU.run(b, offEnvoy, func() loadgen.Result { return loadgen.Run(b, wrk, off, connections, duration) }, nil))
			// The last rows of a run are written after it (waitIdle): they
			// count in its CPU, not in the next run's.
			onRes = append(onRes, onCPU.run(b, onEnvoy, func() loadgen.Result { return loadgen.Run(b, wrk, on, connections, duration) }, func() { waitIdle(b, sink) }))
			discRes = append(discRes, discCPU.run(b, discEnvoy, func() loadgen.Result { return loadgen.Run(b, wrk, discarded, connections, duration) }, nil))
			ratios = append(ratios, onRes[len(onRes)-1].RPS/offRes[len(offRes)-1].RPS)
			discRatios = append(discRatios, discRes[len(discRes)-1].RPS/offRes[len(offRes)-1].RPS)
		}
		o, n, d := mean(offRes), mean(onRes), mean(discRes)
		// The median of each round's ratio: one round disturbed by another
		// load on the machine moves it least.
		ratio := median(ratios)
		b.ReportMetric(ratio, "throughput-ratio")
		b.ReportMetric(float64(n.P99)/float64(o.P99), "p99-ratio")
		b.ReportMetric(median(discRatios), "envoy-only-throughput-ratio")
		b.ReportMetric(0, "ns/op")
		waitIdle(b, sink)
		b.Logf("means of %d rounds of %s, wrk -t2 -c%d", rounds, duration, connections)
		b.Logf("access log off: %.0f req/s p50 %v p99 %v", o.RPS, o.P50, o.P99)
		b.Logf("on, into PostgreSQL on the same cores: %.0f req/s p50 %v p99 %v; median throughput on/off %.3f (goal >= 0.95), p99 on/off %.2f; %d rows written",
			n.RPS, n.P50, n.P99, ratio, float64(n.P99)/float64(o.P99), sink.Stats().Written)
		b.Logf("on, rows discarded after decoding: %.0f req/s p50 %v p99 %v; median throughput on/off %.3f, p99 on/off %.2f",
			d.RPS, d.P50, d.P99, median(discRatios), float64(d.P99)/float64(o.P99))
		b.Logf("CPU per request (µs; Envoy; this process: the model, and the access-log service and sink when on; PostgreSQL):")
		for _, u := range []struct {
			name string
			u    usage
		}{{"off", offCPU}, {"on", onCPU}, {"on, discarded", discCPU}} {
			b.Logf("  %-14s envoy %5.1f  nemesis+model %5.1f  postgres %5.1f  total %5.1f", u.name,
				u.u.per(u.u.envoy), u.u.per(u.u.self), u.u.per(u.u.postgres), u.u.per(u.u.envoy+u.u.self+u.u.postgres))
		}
	}
}

// usage sums the CPU time of the runs of one configuration, by process.
type usage struct {
	requests              float64
	envoy, self, postgres time.Duration
}

// run runs load against e's stack, then settle (the rows' writes), and
// adds the CPU time each process used meanwhile.
func (u *usage) run(b *testing.B, e *servers.Envoy, load func() loadgen.Result, settle func()) loadgen.Result {
	pid := e.Process().PID()
	envoy, self, pg := cpu.Of(pid), cpu.Self(), cpu.Named("postgres")
	start := time.Now()
	r := load()
	u.requests += r.RPS * time.Since(start).Seconds()
	if settle != nil {
		settle()
	}
	u.envoy += cpu.Of(pid) - envoy
	u.self += cpu.Self() - self
	u.postgres += cpu.Named("postgres") - pg
	return r
}

// per is d per request, in microseconds.
func (u usage) per(d time.Duration) float64 {
	return float64(d.Microseconds()) / u.requests
}

type discard struct{}

func (discard) Add(...logsink.Row) {}

func openPool(b *testing.B, url string) *pgxpool.Pool {
	pool, err := database.Open(context.Background(), url)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	return pool
}

// startModel runs a stand-in model answering a small JSON body at once.
func startModel(b *testing.B) ir.Endpoint {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(answer)}
	go func() { _ = srv.Serve(l) }()
	b.Cleanup(func() { _ = srv.Close() })
	port := l.Addr().(*net.TCPAddr).Port
	return ir.Endpoint{Address: "127.0.0.1", Port: uint32(port)}
}

// startEnvoyStack runs what `nemesis serve` runs for proxy logs (xDS with
// the access-log service on its gRPC server, the sink) and one Envoy of
// its own environment, and returns the URL of the model through Envoy.
// A non-nil rows replaces the sink.
func startEnvoyStack(b *testing.B, pool *pgxpool.Pool, ep ir.Endpoint, accessLogCluster string, rows accesslog.Sink) (string, *logsink.Sink, *servers.Envoy) {
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	log := slog.New(slog.DiscardHandler)
	port := testenv.Port(b)
	env := fmt.Sprintf("bench-%d", port)
	cp := xds.New(log, settingsdb.NewStore(pool), translate.Options{
		ListenerAddress: "127.0.0.1", ListenerPort: uint32(port), AccessLogCluster: accessLogCluster,
	})
	cfg := logsink.DefaultConfig()
	cfg.SpillDir = b.TempDir()
	sink, err := logsink.New(pool, cfg, prometheus.NewRegistry(), log)
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = sink.Run(ctx) }()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	if rows == nil {
		rows = sink
	}
	go func() { _ = cp.Server.Serve(ctx, l, accesslog.New(rows, log, accesslog.Options{}).Register) }()
	cp.RoutesChanged(ctx, map[string][]ir.Route{env: {{Name: "bench/model", PathPrefix: "/models/m", Endpoints: []ir.Endpoint{ep}}}})

	e := testenv.ProjectEnvoy(b, l.Addr().String(), servers.EnvoyConfig{NodeID: "envoy-0", Cluster: env, LogLevel: "warn"})
	target := fmt.Sprintf("http://127.0.0.1:%d/models/m/predict", port)
	waitUp(b, target)
	return target, sink, e
}

func waitUp(b *testing.B, u string) {
	c := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := c.Get(u)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s not up: %v", u, err)
		}
	}
}

// waitIdle waits until the sink has written what it took.
func waitIdle(b *testing.B, sink *logsink.Sink) {
	for deadline := time.Now().Add(60 * time.Second); sink.Stats().Pending > 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("sink still has %+v", sink.Stats())
		}
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func mean(rs []loadgen.Result) loadgen.Result {
	var m loadgen.Result
	for _, r := range rs {
		m.RPS += r.RPS / float64(len(rs))
		m.P50 += r.P50 / time.Duration(len(rs))
		m.P99 += r.P99 / time.Duration(len(rs))
	}
	return m
}
