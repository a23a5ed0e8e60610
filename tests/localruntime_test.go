package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/controller/podmetric"
	"github.com/nemesis-ml/nemesis/internal/dev/localruntime"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

const seven = `{"image":["........",".#####..",".....#..","....#...","...#....","...#....","...#....","........"]}`

// The demo model run by the local runtime, its sidecar metering beside it
// (the Service targets the model's own port): serve times the pod's
// requests from Envoy's access logs within 10 % of the model's own timing;
// load raises the replicas through a response-time rule without a failed
// request, and quiet brings them down again, idle pods reporting no
// response time.
func TestDemoModelScalesOnResponseTimeFromEnvoysLogs(t *testing.T) {
	s := newStack(t)
	s.startEnvoy()
	ctx := t.Context()
	s.startRuntime(slog.New(slog.DiscardHandler))
	// "watch" never fires (no pod serves a million requests a second): it
	// only makes the controller export what it sees.
	watch := v1alpha1.ScalingRule{ID: "watch", Action: v1alpha1.ActionIncreaseInstances, WindowSeconds: 4, Thresholds: []v1alpha1.Threshold{
		{MetricType: v1alpha1.MetricAverageResponseTime, Operator: v1alpha1.OperatorGreaterThan, Value: 0},
		{MetricType: v1alpha1.MetricRequestRate, Operator: v1alpha1.OperatorGreaterThan, Value: 1e6},
	}}
	// 20 ms a prediction, mostly waiting: the test times the model, not
	// this machine's busy cores.
	deploy := s.startDemo(1, "1s", 2000, v1alpha1.CustomAutoscalerSpec{MinReplicas: 1, MaxReplicas: 3, Rules: []v1alpha1.ScalingRule{watch}}, "--latency", "20ms")

	url := fmt.Sprintf("http://127.0.0.1:%d/models/digits/predict", s.envoyPort)
	// Every request Envoy answers must reach /proxy/logs.
	var answered atomic.Int64
	var timings modelTimings
	send := func(c *http.Client) (int, string, error) {
		code, body, timing, err := predict(c, url)
		if code != 0 {
			answered.Add(1)
		}
		if code == http.StatusOK {
			timings.add(timing)
		}
		return code, body, err
	}
	var pod string
	testenv.Eventually(t, 60*time.Second, "a prediction through envoy", func() error {
		code, body, err := send(http.DefaultClient)
		if err != nil || code != http.StatusOK || !strings.Contains(body, `"digit":7,`) {
			return fmt.Errorf("%d %q %v", code, body, err)
		}
		var pods corev1.PodList
		if err := s.kube.List(ctx, &pods, client.InNamespace(s.namespace)); err != nil || len(pods.Items) != 1 {
			return fmt.Errorf("pods: %v %v", len(pods.Items), err)
		}
		pod = pods.Items[0].Name
		return nil
	})
	// The sidecar's samples (CPU, memory) reach serve through the pod's
	// relay; serve writes the pod's traffic next to them.
	rdb := testenv.RedisClient(t, s.redis)
	testenv.Eventually(t, 30*time.Second, "samples of the meter and of envoy's logs in redis", func() error {
		sources := map[string]int{}
		for _, smp := range s.samples(rdb, pod) {
			sources[smp.Source]++
		}
		if sources[podmetric.SourceMeter] == 0 || sources[podmetric.SourceEnvoy] == 0 || len(sources) != 2 {
			return fmt.Errorf("samples by source %v", sources)
		}
		return nil
	})

	// Two clients, steady: the controller's response time is the model's.
	load := func(clients int) (stop func() (sent, failed int64, first any)) {
		var sent, failed atomic.Int64
		var firstFailure atomic.Value
		done := make(chan struct{})
		var wg sync.WaitGroup
		for range clients {
			wg.Go(func() {
				c := &http.Client{Timeout: 30 * time.Second}
				for {
					select {
					case <-done:
						return
					default:
					}
					code, body, err := send(c)
					sent.Add(1)
					if err != nil || code != http.StatusOK {
						failed.Add(1)
						firstFailure.CompareAndSwap(nil, fmt.Sprintf("%d %q %v", code, body, err))
					}
				}
			})
		}
		return func() (int64, int64, any) {
			close(done)
			wg.Wait()
			return sent.Load(), failed.Load(), firstFailure.Load()
		}
	}
	seen := fmt.Sprintf(`nemesis_autoscaler_metric_value{metric="AVERAGE_RESPONSE_TIME",name="digits",namespace=%q,rule="watch"}`, s.namespace)
	stop := load(2)
	time.Sleep(8 * time.Second)
	controller := s.metric(seen)
	// The rule's 4 s window ends a second or two back: the logs' flush
	// and the samples' interval.
	model, n := timings.mean(time.Now().Add(-6*time.Second), time.Now().Add(-time.Second))
	if sent, failed, first := stop(); failed > 0 {
		t.Fatalf("%d of %d requests failed at steady load; first: %v", failed, sent, first)
	}
	t.Logf("steady load: the controller saw %.2f ms, the model timed %.2f ms (mean of %d requests)", controller, model, n)
	if n == 0 || math.Abs(controller-model) > 0.1*model {
		t.Fatalf("the controller's response time %.2f ms is not within 10%% of the model's own %.2f ms", controller, model)
	}

	// Scale up past twice the steady response time, down when quiet.
	var ca v1alpha1.CustomAutoscaler
	if err := s.kube.Get(ctx, client.ObjectKey{Namespace: s.namespace, Name: "digits"}, &ca); err != nil {
		t.Fatal(err)
	}
	ca.Spec.Rules = append(ca.Spec.Rules,
		v1alpha1.ScalingRule{ID: "slow", Action: v1alpha1.ActionIncreaseInstances, WindowSeconds: 4, Thresholds: []v1alpha1.Threshold{
			{MetricType: v1alpha1.MetricAverageResponseTime, Operator: v1alpha1.OperatorGreaterThan, Value: 2 * model},
		}},
		v1alpha1.ScalingRule{ID: "quiet", Action: v1alpha1.ActionDecreaseInstances, WindowSeconds: 3, Thresholds: []v1alpha1.Threshold{
			{MetricType: v1alpha1.MetricRequestRate, Operator: v1alpha1.OperatorLessThan, Value: 0.5},
		}},
	)
	ca.Spec.Behavior = &v1alpha1.Behavior{ScaleDown: &v1alpha1.ScalingPolicy{StabilizationWindowSeconds: ptr.To[int32](0), MaxStep: ptr.To[int32](3)}}
	if err := s.kube.Update(ctx, &ca); err != nil {
		t.Fatal(err)
	}

	// 24 clients on the one-worker model: queueing raises the response
	// time, the rule adds replicas.
	stop = load(24)
	readyReplicas := func() int32 {
		var d appsv1.Deployment
		if err := s.kube.Get(ctx, client.ObjectKeyFromObject(deploy), &d); err != nil {
			return -1
		}
		return d.Status.ReadyReplicas
	}
	deadline := time.Now().Add(90 * time.Second)
	for readyReplicas() < 2 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	sent, failed, first := stop()
	if replicas := readyReplicas(); replicas < 2 {
		_ = s.kube.Get(ctx, client.ObjectKey{Namespace: s.namespace, Name: "digits"}, &ca)
		t.Fatalf("ready replicas %d after 90 s of load, want at least 2; %d of %d requests failed (first: %v); autoscaler status %+v",
			replicas, failed, sent, first, ca.Status)
	}
	if failed > 0 {
		t.Fatalf("%d of %d requests failed under load; first: %v", failed, sent, first)
	}
	t.Logf("%d requests through envoy under load, none failed", sent)

	// Quiet: back to one replica; the pods get samples of no requests and
	// no response time, so the controller sees none (not 0 ms).
	testenv.Eventually(t, 60*time.Second, "back to one replica", func() error {
		if err := s.kube.Get(ctx, client.ObjectKey{Namespace: s.namespace, Name: "digits"}, &ca); err != nil {
			return err
		}
		if ready := readyReplicas(); ca.Status.DesiredReplicas != 1 || ready != 1 {
			return fmt.Errorf("desired %d, ready %d", ca.Status.DesiredReplicas, ready)
		}
		return nil
	})
	testenv.Eventually(t, 20*time.Second, "no response time while idle", func() error {
		if v := s.metric(seen); v != 0 {
			return fmt.Errorf("the controller sees %v ms", v)
		}
		var pods corev1.PodList
		if err := s.kube.List(ctx, &pods, client.InNamespace(s.namespace)); err != nil || len(pods.Items) == 0 {
			return fmt.Errorf("pods: %v %v", len(pods.Items), err)
		}
		samples := s.samples(rdb, pods.Items[0].Name)
		last := samples[len(samples)-1]
		if last.Source != podmetric.SourceEnvoy || last.RequestCount != 0 || last.AverageResponseTime != 0 || last.P95ResponseTime != 0 {
			return fmt.Errorf("newest sample %+v, want envoy's of no requests", last)
		}
		return nil
	})

	want := int(answered.Load())
	testenv.Eventually(t, 30*time.Second, "every request of the run in /proxy/logs", func() error {
		if rows, _ := s.logs("environment="+s.env, 1000); len(rows) != want {
			return fmt.Errorf("%d rows, want %d", len(rows), want)
		}
		return nil
	})
}

// modelTimings are the demo model's own timings of its answers (its
// Server-Timing header), with when they arrived.
type modelTimings struct {
	mu  sync.Mutex
	at  []time.Time
	dur []float64
}

func (m *modelTimings) add(ms float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.at = append(m.at, time.Now())
	m.dur = append(m.dur, ms)
}

// mean is the mean timing of the answers that arrived between from and to.
func (m *modelTimings) mean(from, to time.Time) (float64, int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	sum, n := 0.0, 0
	for i, at := range m.at {
		if at.After(from) && at.Before(to) {
			sum += m.dur[i]
			n++
		}
	}
	if n == 0 {
		return 0, 0
	}
	return sum / float64(n), n
}

// samples reads a pod's samples in Redis, oldest first.
func (s *stack) samples(rdb *redis.Client, pod string) []podmetric.Sample {
	s.t.Helper()
	members, err := rdb.ZRange(s.t.Context(), "podmetric:"+s.namespace+"/"+pod, 0, -1).Result()
	if err != nil {
		s.t.Fatal(err)
	}
	out := make([]podmetric.Sample, len(members))
	for i, m := range members {
		if err := json.Unmarshal([]byte(m), &out[i]); err != nil {
			s.t.Fatal(err)
		}
	}
	return out
}

// predict posts the seven and returns the model's own timing of it.
func predict(c *http.Client, url string) (code int, body string, modelMS float64, err error) {
	resp, err := c.Post(url, "application/json", strings.NewReader(seven))
	if err != nil {
		return 0, "", 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	if v, ok := strings.CutPrefix(resp.Header.Get("Server-Timing"), "model;dur="); ok {
		modelMS, _ = strconv.ParseFloat(v, 64)
	}
	return resp.StatusCode, string(raw), modelMS, err
}

func post(c *http.Client, url string) (int, string, error) {
	resp, err := c.Post(url, "application/json", strings.NewReader(seven))
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// startRuntime runs the local runtime for the stack's namespace until the
// test ends, logging to log.
func (s *stack) startRuntime(log *slog.Logger) {
	s.t.Helper()
	rt, err := localruntime.New(localruntime.Config{
		Kube: testenv.Kube(s.t), Node: "e2e-" + strconv.Itoa(testenv.Port(s.t)), Namespace: s.namespace,
		Dir: testenv.Dir(s.t, "pods"), Nemesis: nemesisBin, Controller: s.apiURL, ControllerToken: metricsToken,
		EndpointDelay: time.Second, Log: log,
	})
	if err != nil {
		s.t.Fatal(err)
	}
	rtCtx, stopRuntime := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(rtCtx) }()
	s.t.Cleanup(func() { stopRuntime(); <-done })
}

// startDemo creates the demo model's Deployment (replicas, start-up delay
// startup, training samples: more make each prediction slower), its
// Service and a CustomAutoscaler of spec routing /models/digits to it, and
// returns the Deployment.
func (s *stack) startDemo(replicas int32, startup string, samples int, spec v1alpha1.CustomAutoscalerSpec, flags ...string) *appsv1.Deployment {
	s.t.Helper()
	lbls := map[string]string{"app": "digits"}
	deploy := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "digits", Namespace: s.namespace, Labels: map[string]string{localruntime.LabelLocalRuntime: "true"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: lbls},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: lbls},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "model", Image: "nemesis", Command: []string{"nemesis", "demo-model"},
					// The port named http is the Service's: the sidecar
					// meters beside the model, out of the request path.
					Args:           append([]string{"--listen", ":8080", "--base-path", "/models/digits", "--samples", strconv.Itoa(samples), "--startup-delay", startup}, flags...),
					Ports:          []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(8080)}}},
				}}},
			},
		},
	}
	spec.ScaleTargetRef = v1alpha1.ScaleTargetReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "digits"}
	spec.Route = &v1alpha1.Route{Environment: s.env, PathPrefix: "/models/digits", Service: "digits", Port: 80}
	objs := []client.Object{
		deploy,
		&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "digits", Namespace: s.namespace},
			Spec:       corev1.ServiceSpec{Selector: lbls, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}},
		},
		&v1alpha1.CustomAutoscaler{ObjectMeta: metav1.ObjectMeta{Name: "digits", Namespace: s.namespace}, Spec: spec},
	}
	for _, o := range objs {
		if err := s.kube.Create(s.t.Context(), o); err != nil {
			s.t.Fatal(err)
		}
	}
	return deploy
}
