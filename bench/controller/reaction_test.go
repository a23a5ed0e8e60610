package controller_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/controller/ingest"
	"github.com/nemesis-ml/nemesis/controller/reconciler"
	"github.com/nemesis-ml/nemesis/controller/store"
	"github.com/nemesis-ml/nemesis/extproc/accesslog"
	"github.com/nemesis-ml/nemesis/extproc/logship"
	"github.com/nemesis-ml/nemesis/extproc/logsink"
	"github.com/nemesis-ml/nemesis/extproc/podtraffic"
	"github.com/nemesis-ml/nemesis/internal/database"
	"github.com/nemesis-ml/nemesis/internal/dev/servers"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
	"github.com/nemesis-ml/nemesis/sidecar"
	"github.com/nemesis-ml/nemesis/sidecar/meter"
	"github.com/nemesis-ml/nemesis/xds"
	"github.com/nemesis-ml/nemesis/xds/ir"
	"github.com/nemesis-ml/nemesis/xds/settingsdb"
	"github.com/nemesis-ml/nemesis/xds/translate"
)

// BenchmarkResponseTimeReaction (c): a model behind a real Envoy slows
// from 2 ms to 40 ms under steady load; how long until the response-time
// rule (over 20 ms, 1 s window) scales it, when its samples come from
// Envoy's access logs (serve's pod traffic at its default 500 ms interval;
// the baseline of the ratio), streamed by Envoy or written to a file that
// nemesis logship ships (serve --access-log-file: Envoy writes the file
// every 250 ms, the shipper reads it as often), against a sidecar in proxy
// mode in front of it (pushing every second, its default).
func BenchmarkResponseTimeReaction(b *testing.B) {
	const trials = 8
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	log := slog.New(slog.DiscardHandler)
	c := testenv.KubeClient(b)
	st := store.New(testenv.RedisClient(b, testenv.Redis(b)), time.Hour)
	ns := "reaction"
	_ = c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	deploy, pod := readyPod(b, c, ns)
	ca := &v1alpha1.CustomAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: "model", Namespace: ns},
		Spec: v1alpha1.CustomAutoscalerSpec{
			ScaleTargetRef: v1alpha1.ScaleTargetReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "model"},
			MinReplicas:    1, MaxReplicas: 2,
			Rules: []v1alpha1.ScalingRule{{ID: "slow", Action: v1alpha1.ActionIncreaseInstances, WindowSeconds: 1,
				Thresholds: []v1alpha1.Threshold{{MetricType: v1alpha1.MetricAverageResponseTime, Operator: v1alpha1.OperatorGreaterThan, Value: 20}}}},
		},
	}
	if err := c.Create(ctx, ca); err != nil {
		b.Fatal(err)
	}
	mgr, err := reconciler.NewManager(testenv.Kube(b), reconciler.Options{Store: st, Registerer: prometheus.NewRegistry(), Log: logr.Discard()})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	waitForStatus(b, c, ca)

	var delay atomic.Int64
	model := startDelayedModel(b, &delay)

	// Serve's side: xDS, the access-log service with pod traffic, its
	// flusher into the store, POST /metrics for the sidecar.
	_, dbURL := testenv.Database(b)
	pool, err := database.Open(ctx, dbURL)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	traffic := podtraffic.New(nil)
	go podtraffic.NewFlusher(traffic, st, 500*time.Millisecond, prometheus.NewRegistry(), log).Run(ctx)
	ingestSrv := httptest.NewServer(ingest.New(st, ingest.Options{Registerer: prometheus.NewRegistry()}))
	b.Cleanup(ingestSrv.Close)

	// The sidecar in proxy mode, in front of the same model.
	sidecarPort := testenv.Port(b)
	go func() {
		_ = sidecar.Run(ctx, log, sidecar.Config{
			Mode: sidecar.ModeProxy, Listen: fmt.Sprintf("127.0.0.1:%d", sidecarPort), AdminListen: fmt.Sprintf("127.0.0.1:%d", testenv.Port(b)),
			Model: model, Namespace: ns, Pod: pod, Controller: ingestSrv.URL, PushInterval: time.Second, BatchSize: 100, BufferSize: 600,
			Meter: meter.Config{Source: meter.SourceProcesses, PID: os.Getpid()}, ShutdownGrace: time.Second,
		})
	}()

	// Three environments, one Envoy each: "logs" and "file" reach the
	// model (the endpoint names the pod), "sidecar" the sidecar (no pod:
	// the logs time nobody there).
	modelPort := model.Port()
	toModel := []ir.Route{{Name: ns + "/model", PathPrefix: "/m", Endpoints: []ir.Endpoint{{Address: "127.0.0.1", Port: atoi(modelPort), Pod: ns + "/" + pod}}}}
	routes := map[string][]ir.Route{
		"logs":    toModel,
		"file":    toModel,
		"sidecar": {{Name: ns + "/model", PathPrefix: "/m", Endpoints: []ir.Endpoint{{Address: "127.0.0.1", Port: uint32(sidecarPort)}}}},
	}
	traffic.SetRoutes(routes)
	urls := map[string]string{}
	for env := range routes {
		// One control plane per Envoy: each has its own listener port.
		port := testenv.Port(b)
		opts := translate.Options{ListenerAddress: "127.0.0.1", ListenerPort: uint32(port), AccessLogCluster: "nemesis-xds"}
		if env == "file" {
			opts.AccessLogPath = filepath.Join(testenv.Dir(b, "accesslog"), "access.log")
		}
		cp := xds.New(log, settingsdb.NewStore(pool), opts)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			_ = cp.Server.Serve(ctx, l, accesslog.New(discardRows{}, log, accesslog.Options{Traffic: traffic}).Register)
		}()
		cp.RoutesChanged(ctx, map[string][]ir.Route{env: routes[env]})
		envoy := testenv.ProjectEnvoy(b, l.Addr().String(), servers.EnvoyConfig{NodeID: "envoy-" + env, Cluster: env, LogLevel: "warn"})
		if opts.AccessLogPath != "" {
			ship(ctx, b, opts.AccessLogPath, envoy, l.Addr().String(), env)
		}
		urls[env] = fmt.Sprintf("http://127.0.0.1:%d/m", port)
	}

	scale := func(n int32) {
		s := &autoscalingv1.Scale{}
		if err := c.SubResource("scale").Get(ctx, deploy, s); err != nil {
			b.Fatal(err)
		}
		if s.Spec.Replicas == n {
			return
		}
		s.Spec.Replicas = n
		if err := c.SubResource("scale").Update(ctx, deploy, client.WithSubResourceBody(s)); err != nil {
			b.Fatal(err)
		}
	}
	replicas := func() int32 {
		s := &autoscalingv1.Scale{}
		if err := c.SubResource("scale").Get(ctx, deploy, s); err != nil {
			b.Fatal(err)
		}
		return s.Spec.Replicas
	}
	measure := func(url string) []time.Duration {
		stop := steadyLoad(b, url, 4)
		defer stop()
		var out []time.Duration
		for range trials {
			delay.Store(int64(2 * time.Millisecond))
			time.Sleep(3 * time.Second)
			scale(1)
			time.Sleep(2 * time.Second)
			breach := time.Now()
			delay.Store(int64(40 * time.Millisecond))
			for replicas() != 2 {
				if time.Since(breach) > 30*time.Second {
					b.Fatalf("%s: not scaled 30 s after the model slowed", url)
				}
				time.Sleep(10 * time.Millisecond)
			}
			out = append(out, time.Since(breach))
		}
		return out
	}
	for range b.N {
		fromLogs := measure(urls["logs"])
		fromFile := measure(urls["file"])
		fromSidecar := measure(urls["sidecar"])
		l50, f50, s50 := pct(fromLogs, 0.5), pct(fromFile, 0.5), pct(fromSidecar, 0.5)
		b.ReportMetric(float64(s50)/float64(l50), "sidecar/logs-p50-ratio")
		b.ReportMetric(float64(f50)/float64(l50), "file/logs-p50-ratio")
		b.ReportMetric(float64(l50.Milliseconds()), "logs-p50-ms")
		b.ReportMetric(0, "ns/op")
		b.Logf("breach to scale over %d trials each: samples from Envoy's streamed logs p50 %v max %v; from its shipped file p50 %v max %v (file/streamed %.2f); from a proxy-mode sidecar p50 %v max %v; sidecar/logs p50 %.2f",
			trials, l50, pct(fromLogs, 1), f50, pct(fromFile, 1), float64(f50)/float64(l50), s50, pct(fromSidecar, 1), float64(s50)/float64(l50))
	}
}

// ship runs nemesis logship's loop on the file of envoy, to the control
// plane at addr (plaintext, as the bench's Envoys reach it).
func ship(ctx context.Context, b *testing.B, path string, envoy *servers.Envoy, addr, env string) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	go func() {
		_ = logship.Run(ctx, slog.New(slog.DiscardHandler), logship.Config{
			Path: path, RotateBytes: 64 << 20, Conn: conn, Interval: 250 * time.Millisecond, BatchBytes: 1 << 20,
			Identifier: &accesslogv3.StreamAccessLogsMessage_Identifier{Node: &corev3.Node{Id: "envoy-" + env, Cluster: env}, LogName: translate.AccessLogName},
			Reopen:     logship.ReopenEnvoyLogs(envoy.AdminURL()),
		})
	}()
}

type discardRows struct{}

func (discardRows) Add(...logsink.Row) {}

func atoi(port string) uint32 {
	var n uint32
	_, _ = fmt.Sscan(port, &n)
	return n
}

func pct(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1))]
}

// readyPod creates a Deployment "model" of one replica and its ready pod,
// and returns them (the pod by name).
func readyPod(b *testing.B, c client.Client, ns string) (*appsv1.Deployment, string) {
	b.Helper()
	labels := map[string]string{"app": "model"}
	deploy := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "model", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "m", Image: "m"}}}},
		},
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "model-0", Namespace: ns, Labels: labels},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "m", Image: "m"}}}}
	for _, o := range []client.Object{deploy, pod} {
		if err := c.Create(context.Background(), o); err != nil {
			b.Fatal(err)
		}
	}
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	if err := c.Status().Update(context.Background(), pod); err != nil {
		b.Fatal(err)
	}
	return deploy, pod.Name
}

// startDelayedModel answers after *delay.
func startDelayedModel(b *testing.B, delay *atomic.Int64) *url.URL {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		time.Sleep(time.Duration(delay.Load()))
		_, _ = w.Write([]byte(`{"digit":7}`))
	})}
	go func() { _ = srv.Serve(l) }()
	b.Cleanup(func() { _ = srv.Close() })
	return &url.URL{Scheme: "http", Host: l.Addr().String()}
}

// steadyLoad sends requests from clients goroutines until stopped.
func steadyLoad(b *testing.B, url string, clients int) (stop func()) {
	quit := make(chan struct{})
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			hc := &http.Client{Timeout: 10 * time.Second}
			for {
				select {
				case <-quit:
					return
				default:
				}
				resp, err := hc.Get(url)
				if err != nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
		})
	}
	return func() { close(quit); wg.Wait() }
}
