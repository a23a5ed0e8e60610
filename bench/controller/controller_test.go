// Package controller_test measures the autoscaler against baselines taken in
// the same run: (a) POST /metrics ingest against a raw Redis pipeline of
// the same samples, (b) breach-to-scale latency against a bare
// scale-subresource update round trip. Run with `make bench`.
package controller_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/controller/ingest"
	"github.com/nemesis-ml/nemesis/controller/podmetric"
	"github.com/nemesis-ml/nemesis/controller/reconciler"
	"github.com/nemesis-ml/nemesis/controller/store"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

func TestMain(m *testing.M) { testenv.Run(m) }

const (
	pods          = 1000
	batchesPerPod = 5
	batchSize     = 10 // one sample per second, pushed every 10 s
	workers       = 32
)

func batches() [][]podmetric.Sample {
	now := time.Now()
	var out [][]podmetric.Sample
	for b := range batchesPerPod {
		for p := range pods {
			batch := make([]podmetric.Sample, batchSize)
			for i := range batch {
				batch[i] = podmetric.Sample{
					ID: fmt.Sprintf("bench/model-%d", p), CPUUsage: 500, MemoryUsage: 2048, DiskUsage: 100,
					AverageResponseTime: 40, RequestCount: 20, RequestRate: 2, InFlightRequests: 1,
					ReceivedAt: now.Add(-time.Duration(b*batchSize+i) * time.Second),
				}
			}
			out = append(out, batch)
		}
	}
	return out
}

// parallel runs do over the batches on a fixed number of workers and
// returns samples per second.
func parallel(b *testing.B, all [][]podmetric.Sample, do func([]podmetric.Sample) error) float64 {
	b.Helper()
	work := make(chan []podmetric.Sample)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for batch := range work {
				if err := do(batch); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
				}
			}
		})
	}
	for _, batch := range all {
		work <- batch
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	return float64(len(all)*batchSize) / time.Since(start).Seconds()
}

func BenchmarkIngest(b *testing.B) {
	r := testenv.Redis(b)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr(), PoolSize: workers})
	b.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()
	all := batches()
	bodies := make([][]byte, len(all))
	for i, batch := range all {
		bodies[i], _ = json.Marshal(batch)
	}

	// Baseline: the same samples, already encoded, ZADDed in one pipeline
	// per batch with no HTTP, validation or trimming.
	members := map[*podmetric.Sample][]byte{}
	for _, batch := range all {
		for i := range batch {
			members[&batch[i]], _ = json.Marshal(batch[i])
		}
	}
	raw := parallel(b, all, func(batch []podmetric.Sample) error {
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := range batch {
				p.ZAdd(ctx, "baseline:"+batch[i].ID, redis.Z{Score: float64(batch[i].ReceivedAt.Unix()), Member: members[&batch[i]]})
			}
			return nil
		})
		return err
	})

	srv := httptest.NewServer(ingest.New(store.New(rdb, time.Hour), ingest.Options{Registerer: prometheus.NewRegistry()}))
	b.Cleanup(srv.Close)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	next := make(chan []byte, len(bodies))
	for _, body := range bodies {
		next <- body
	}
	close(next)
	viaHTTP := parallel(b, all, func([]podmetric.Sample) error {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader(<-next))
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("POST /metrics: %d", resp.StatusCode)
		}
		return nil
	})
	if n := rdb.ZCard(ctx, "podmetric:bench/model-0").Val(); n != batchesPerPod*batchSize {
		b.Fatalf("model-0 has %d samples stored, want %d", n, batchesPerPod*batchSize)
	}
	b.ReportMetric(viaHTTP, "samples/s")
	b.ReportMetric(raw, "baseline-samples/s")
	b.ReportMetric(viaHTTP/raw, "ratio")
	b.Logf("ingest: %.0f samples/s over HTTP from %d pods in batches of %d; raw Redis pipeline %.0f samples/s; ratio %.2f",
		viaHTTP, pods, batchSize, raw, viaHTTP/raw)
}

func BenchmarkBreachToScale(b *testing.B) {
	const trials = 100
	kube := testenv.Kube(b)
	c := testenv.KubeClient(b)
	r := testenv.Redis(b)
	rdb := testenv.RedisClient(b, r)
	st := store.New(rdb, time.Hour)
	ctx := context.Background()
	ns := "bench"
	_ = c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	deploy, _ := readyPod(b, c, ns)
	ca := &v1alpha1.CustomAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: "model", Namespace: ns},
		Spec: v1alpha1.CustomAutoscalerSpec{
			ScaleTargetRef: v1alpha1.ScaleTargetReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "model"},
			MinReplicas:    1, MaxReplicas: 2,
			Rules: []v1alpha1.ScalingRule{{ID: "cpu-high", Action: v1alpha1.ActionIncreaseInstances, WindowSeconds: 30,
				Thresholds: []v1alpha1.Threshold{{MetricType: v1alpha1.MetricCPUUsage, Operator: v1alpha1.OperatorGreaterThan, Value: 700}}}},
		},
	}
	if err := c.Create(ctx, ca); err != nil {
		b.Fatal(err)
	}
	mgr, err := reconciler.NewManager(kube, reconciler.Options{Store: st, Registerer: prometheus.NewRegistry(), Log: logr.Discard()})
	if err != nil {
		b.Fatal(err)
	}
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	b.Cleanup(func() { cancel(); <-done })
	srv := httptest.NewServer(ingest.New(st, ingest.Options{Registerer: prometheus.NewRegistry()}))
	b.Cleanup(srv.Close)

	replicas := func() int32 {
		scale := &autoscalingv1.Scale{}
		if err := c.SubResource("scale").Get(ctx, deploy, scale); err != nil {
			b.Fatal(err)
		}
		return scale.Spec.Replicas
	}
	setReplicas := func(n int32) {
		scale := &autoscalingv1.Scale{}
		if err := c.SubResource("scale").Get(ctx, deploy, scale); err != nil {
			b.Fatal(err)
		}
		scale.Spec.Replicas = n
		if err := c.SubResource("scale").Update(ctx, deploy, client.WithSubResourceBody(scale)); err != nil {
			b.Fatal(err)
		}
	}
	waitFor := func(want int32, deadline time.Duration) {
		end := time.Now().Add(deadline)
		for replicas() != want {
			if time.Now().After(end) {
				b.Fatalf("replicas did not reach %d within %s", want, deadline)
			}
		}
	}
	// Let the controller settle: finalizer, first status.
	waitForStatus(b, c, ca)

	var baseline, breach []time.Duration
	for range trials {
		start := time.Now()
		setReplicas(1)
		baseline = append(baseline, time.Since(start))
	}
	for range trials {
		setReplicas(1)
		time.Sleep(20 * time.Millisecond) // the breach comes after the reset, not with it
		body := fmt.Sprintf(`{"id":"bench/model-0","cpuUsage":900,"receivedAt":%q}`, time.Now().Format(time.RFC3339Nano))
		start := time.Now()
		resp, err := http.Post(srv.URL, "application/json", bytes.NewBufferString(body))
		if err != nil {
			b.Fatal(err)
		}
		_ = resp.Body.Close()
		waitFor(2, 10*time.Second)
		breach = append(breach, time.Since(start))
	}
	p := func(d []time.Duration, q float64) time.Duration {
		s := slices.Clone(d)
		slices.Sort(s)
		return s[int(q*float64(len(s)-1))]
	}
	b.ReportMetric(float64(p(breach, 0.5).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p(breach, 0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(p(breach, 0.5))/float64(p(baseline, 0.5)), "p50-ratio")
	b.Logf("breach to scale over %d trials: p50 %s p99 %s; bare scale round trip p50 %s p99 %s; ratio p50 %.1f p99 %.1f",
		trials, p(breach, 0.5), p(breach, 0.99), p(baseline, 0.5), p(baseline, 0.99),
		float64(p(breach, 0.5))/float64(p(baseline, 0.5)), float64(p(breach, 0.99))/float64(p(baseline, 0.99)))
}

func waitForStatus(b *testing.B, c client.Client, ca *v1alpha1.CustomAutoscaler) {
	b.Helper()
	end := time.Now().Add(30 * time.Second)
	for {
		got := &v1alpha1.CustomAutoscaler{}
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(ca), got); err == nil && got.Status.ObservedGeneration > 0 {
			return
		}
		if time.Now().After(end) {
			b.Fatal("the controller never wrote a status")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
