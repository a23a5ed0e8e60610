// Package activator_test measures the wake latency the activator adds: over
// 20 wakes of a model at zero, the time from the model's EndpointSlice
// turning ready to the held request's first byte, beside the floor measured
// in the same run: a request sent straight to Envoy as soon as every Envoy
// has ACKed the endpoint; and each wake's whole time held beyond the
// model's start-up (from the fake kubelet seeing the replica to the slice).
// Run with `make bench`.
package activator_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nemesis-ml/nemesis/controller"
	"github.com/nemesis-ml/nemesis/controller/activation"
	"github.com/nemesis-ml/nemesis/extproc/activator"
	"github.com/nemesis-ml/nemesis/internal/database"
	"github.com/nemesis-ml/nemesis/internal/dev/servers"
	"github.com/nemesis-ml/nemesis/internal/kubescheme"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
	"github.com/nemesis-ml/nemesis/xds"
	"github.com/nemesis-ml/nemesis/xds/ir"
	"github.com/nemesis-ml/nemesis/xds/kubesource"
	"github.com/nemesis-ml/nemesis/xds/settingsdb"
	"github.com/nemesis-ml/nemesis/xds/translate"
)

func TestMain(m *testing.M) { testenv.Run(m) }

const (
	wakes   = 20
	startup = 500 * time.Millisecond
	env     = "bench"
)

// BenchmarkWakeLatency prints, per wake, first byte minus model readiness
// for the held request and for the straight request after the ACK.
func BenchmarkWakeLatency(b *testing.B) {
	for range b.N {
		held, direct, beyond := measure(b)
		fmt.Printf("model start-up %s | wake: held request's first byte − endpoint ready  p50 %6.1f ms  p99 %6.1f ms | straight request after the ACK  p50 %6.1f ms  p99 %6.1f ms | ratio p50 %.2f p99 %.2f | held beyond the start-up p50 %.1f ms p99 %.1f ms\n",
			startup, ms(pct(held, 50)), ms(pct(held, 99)), ms(pct(direct, 50)), ms(pct(direct, 99)),
			float64(pct(held, 50))/float64(pct(direct, 50)), float64(pct(held, 99))/float64(pct(direct, 99)),
			ms(pct(beyond, 50)), ms(pct(beyond, 99)))
		b.ReportMetric(ms(pct(held, 50)), "wake-p50-ms")
		b.ReportMetric(ms(pct(held, 99)), "wake-p99-ms")
		b.ReportMetric(ms(pct(direct, 99)), "ack-floor-p99-ms")
		b.ReportMetric(ms(pct(beyond, 99)), "beyond-startup-p99-ms")
	}
}

// measure wakes the model 20 times through the whole control plane, in
// process: settings, Kubernetes routes, the controller, the activator and
// the xDS server, with one real Envoy.
func measure(b *testing.B) (held, direct, beyond []time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	_, dbURL := testenv.Database(b)
	pool, err := database.Open(ctx, dbURL)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	redis := testenv.Redis(b)
	kubeCfg := testenv.Kube(b)
	scheme, err := kubescheme.New()
	if err != nil {
		b.Fatal(err)
	}
	kube, err := client.NewWithWatch(kubeCfg, client.Options{Scheme: scheme})
	if err != nil {
		b.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "bench-"}}
	if err := kube.Create(ctx, ns); err != nil {
		b.Fatal(err)
	}

	envoyPort := testenv.Port(b)
	cp := xds.New(log, settingsdb.NewStore(pool), translate.Options{ListenerAddress: "127.0.0.1", ListenerPort: uint32(envoyPort)})
	routes, err := kubesource.New(kubeCfg, scheme, log, func(r map[string][]ir.Route) { cp.RoutesChanged(ctx, r) })
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = routes.Run(ctx) }()
	// Wired as in nemesis serve: the activator tells the controller of its
	// own process and stamps the annotation.
	activations := activation.NewLocal()
	autoscaling, err := controller.New(controller.Config{
		RedisURL: redis.URL(), Retention: time.Hour, RunController: true, Kube: kubeCfg, LeaderElectionNamespace: ns.Name,
		Activations: activations,
	}, prometheus.NewRegistry(), log)
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = autoscaling.Run(ctx) }()
	act := activator.New(ctx, activator.Config{Route: cp.Hold, Ready: cp.WaitReady, Wake: activation.Wake(activations, activation.New(kube)), Log: log})
	xdsListener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = cp.Server.Serve(ctx, xdsListener, act.Register) }()

	e := testenv.ProjectEnvoy(b, xdsListener.Addr().String(), servers.EnvoyConfig{NodeID: "envoy-0", Cluster: env, LogLevel: "warn"})

	url := fmt.Sprintf("http://127.0.0.1:%d/models/bench", envoyPort)
	m := newModel(b, ctx, kube, ns.Name, cp, url)
	for i := range wakes + 1 {
		waitFor(b, "the route at zero", func() bool { return activatorOn(b, e, m.route()) })
		sent := time.Now()
		fb := get(b, url)
		up, ready, floor := <-m.up, <-m.ready, <-m.direct
		m.scaleToZero(b)
		if i == 0 {
			continue // the first wake also waited for the controller's election
		}
		held, direct = append(held, fb.Sub(ready)), append(direct, floor)
		beyond = append(beyond, fb.Sub(sent)-ready.Sub(up))
	}
	return held, direct, beyond
}

// get sends one request and returns when its first byte arrived.
func get(b *testing.B, url string) time.Time {
	resp, err := http.Get(url)
	fb := time.Now()
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	return fb
}

// activatorOn says whether Envoy's route enables the activator.
func activatorOn(b *testing.B, e *servers.Envoy, route string) bool {
	filters, _, err := e.RouteFilters(context.Background(), route)
	if err != nil {
		b.Fatal(err)
	}
	return slices.Contains(filters, translate.ExtProcFilterName)
}

func waitFor(b *testing.B, what string, ok func() bool) {
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			b.Fatalf("%s: not after 30s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
