package tests

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

// demoStartup is the demo model's simulated weight loading.
const demoStartup = 2 * time.Second

// TestDemoWakesFromZero is the whole wake-from-zero flow on the real demo
// model run by the local runtime: at zero replicas, 50 concurrent requests
// are held by the activator while the model wakes and all succeed; each is
// held little longer than the pod took to start; the decision record has
// the wake's stages in order, adding up to the measured hold; idle brings
// the model back to zero and the next request wakes it again.
func TestDemoWakesFromZero(t *testing.T) {
	s := newStack(t)
	envoy := s.startEnvoy()
	s.waitConnected(1)
	pods := &podTimes{}
	s.startRuntime(slog.New(pods))
	// Few samples: predictions take well under a millisecond, so the
	// time to the first byte is the time held.
	deploy := s.startDemo(0, demoStartup.String(), 500, v1alpha1.CustomAutoscalerSpec{
		MinReplicas: 0, MaxReplicas: 2,
		Rules: []v1alpha1.ScalingRule{{ID: "idle", Action: v1alpha1.ActionDecreaseInstancesToZero, WindowSeconds: 2,
			Thresholds: []v1alpha1.Threshold{{MetricType: v1alpha1.MetricRequestRate, Operator: v1alpha1.OperatorEqualTo, Value: 0}}}},
		ScaleToZero: &v1alpha1.ScaleToZero{IdlePeriodSeconds: 5},
	})
	url := fmt.Sprintf("http://127.0.0.1:%d/models/digits/predict", s.envoyPort)
	s.waitActivatorOnRoute(envoy, s.namespace+"/digits", true)
	s.waitDecided("digits")
	predict := func() (*http.Request, error) {
		return http.NewRequest(http.MethodPost, url, strings.NewReader(seven))
	}

	results := burstOf(50, predict)
	started, ready := pods.last(t)
	startup := ready.Sub(started)
	var excess, afterReady, upstream []time.Duration
	first := results[0].sent
	for _, r := range results {
		if r.sent.Before(first) {
			first = r.sent
		}
		afterReady = append(afterReady, r.firstByte.Sub(ready))
		upstream = append(upstream, r.upstream)
		if r.err != nil || r.code != http.StatusOK || !strings.Contains(r.body, `"digit":7,`) {
			t.Fatalf("held request: %d %q %v", r.code, r.body, r.err)
		}
		excess = append(excess, r.held()-startup)
	}
	p50, p99 := percentiles(excess)
	ready50, ready99 := percentiles(afterReady)
	up50, up99 := percentiles(upstream)
	t.Logf("pod start-up %v (model %v of it); held beyond it: p50 %v p99 %v; first request to pod start %v; pod ready to first byte p50 %v p99 %v, of which in the model p50 %v p99 %v",
		startup.Round(time.Millisecond), demoStartup, p50.Round(time.Millisecond), p99.Round(time.Millisecond),
		started.Sub(first).Round(time.Millisecond), ready50.Round(time.Millisecond), ready99.Round(time.Millisecond), up50, up99)
	// The goal is 100 ms on a quiet machine; the bound here only catches a
	// request held for a wake it did not need.
	if p99 > 2*time.Second {
		t.Fatalf("requests held %v beyond the pod's start-up at p99", p99)
	}
	if got := replicas(t, s, deploy); got < 1 {
		t.Fatalf("%d replicas after the wake", got)
	}
	s.waitScaledSince("digits", first)
	s.checkWakeRecord("digits", results, 50)
	s.waitActivatorOnRoute(envoy, s.namespace+"/digits", false)

	testenv.Eventually(t, 60*time.Second, "back to zero when idle", func() error {
		if got := replicas(t, s, deploy); got != 0 {
			return fmt.Errorf("%d replicas", got)
		}
		return nil
	})
	s.waitActivatorOnRoute(envoy, s.namespace+"/digits", true)
	again := burstOf(1, predict)[0]
	if again.err != nil || again.code != http.StatusOK {
		t.Fatalf("request after scaling to zero: %d %q %v", again.code, again.body, again.err)
	}
	if got := replicas(t, s, deploy); got != 1 {
		t.Fatalf("%d replicas after the second wake, want 1", got)
	}
}

// percentiles sorts d and returns its 50th and 99th percentiles.
func percentiles(d []time.Duration) (p50, p99 time.Duration) {
	slices.Sort(d)
	return d[len(d)/2], d[len(d)*99/100]
}

func replicas(t *testing.T, s *stack, d *appsv1.Deployment) int32 {
	t.Helper()
	var got appsv1.Deployment
	if err := s.kube.Get(t.Context(), client.ObjectKeyFromObject(d), &got); err != nil {
		t.Fatal(err)
	}
	return ptr.Deref(got.Spec.Replicas, 0)
}

// podTimes is a log handler for the local runtime that keeps when its last
// pod was created and when it became ready.
type podTimes struct {
	mu             sync.Mutex
	started, ready time.Time
}

func (p *podTimes) Enabled(context.Context, slog.Level) bool { return true }

func (p *podTimes) Handle(_ context.Context, r slog.Record) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch r.Message {
	case "pod started":
		// The pod starts when the runtime creates it, as a kubelet's pod
		// start-up includes its sandbox.
		p.started, p.ready = r.Time, time.Time{}
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "setup" {
				p.started = r.Time.Add(-a.Value.Duration())
			}
			return true
		})
	case "pod readiness changed":
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "ready" && a.Value.Bool() && p.ready.IsZero() {
				p.ready = r.Time
			}
			return true
		})
	}
	return nil
}

func (p *podTimes) WithAttrs([]slog.Attr) slog.Handler { return p }
func (p *podTimes) WithGroup(string) slog.Handler      { return p }

func (p *podTimes) last(t *testing.T) (started, ready time.Time) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started.IsZero() || p.ready.Before(p.started) {
		t.Fatalf("no pod started and became ready (started %v, ready %v)", p.started, p.ready)
	}
	return p.started, p.ready
}
