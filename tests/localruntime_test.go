package tests

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/internal/dev/localruntime"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

const seven = `{"image":["........",".#####..",".....#..","....#...","...#....","...#....","...#....","........"]}`

// The demo model run by the local runtime answers through Envoy, its
// sidecar's samples reach serve through the pod's relay, and load raises
// its replicas through a response-time rule without a failed request.
func TestDemoModelServesThroughEnvoyAndScalesOnResponseTime(t *testing.T) {
	s := newStack(t)
	s.startEnvoy()
	ctx := t.Context()
	s.startRuntime(slog.New(slog.DiscardHandler))
	deploy := s.startDemo(1, "1s", 60000, v1alpha1.CustomAutoscalerSpec{
		MinReplicas: 1, MaxReplicas: 3,
		Rules: []v1alpha1.ScalingRule{{ID: "slow", Action: v1alpha1.ActionIncreaseInstances, WindowSeconds: 5, Thresholds: []v1alpha1.Threshold{
			{MetricType: v1alpha1.MetricAverageResponseTime, Operator: v1alpha1.OperatorGreaterThan, Value: 20},
		}}},
	})

	url := fmt.Sprintf("http://127.0.0.1:%d/models/digits/predict", s.envoyPort)
	// Every request Envoy answers must reach /proxy/logs.
	var answered atomic.Int64
	send := func(c *http.Client) (int, string, error) {
		code, body, err := post(c, url)
		if code != 0 {
			answered.Add(1)
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
	rdb := testenv.RedisClient(t, s.redis)
	testenv.Eventually(t, 30*time.Second, "samples of the pod in redis", func() error {
		n, err := rdb.ZCard(ctx, "podmetric:"+s.namespace+"/"+pod).Result()
		if err != nil || n == 0 {
			return fmt.Errorf("%d samples (%v)", n, err)
		}
		return nil
	})

	// Load from 24 clients on the one-worker model: queueing raises the
	// response time past 20 ms, the rule adds replicas.
	var failed, sent atomic.Int64
	var firstFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 24 {
		wg.Go(func() {
			c := &http.Client{Timeout: 30 * time.Second}
			for {
				select {
				case <-stop:
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
	deadline := time.Now().Add(90 * time.Second)
	var replicas int32
	for time.Now().Before(deadline) {
		var d appsv1.Deployment
		if err := s.kube.Get(ctx, client.ObjectKeyFromObject(deploy), &d); err == nil {
			replicas = d.Status.ReadyReplicas
		}
		if replicas >= 2 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if replicas < 2 {
		var ca v1alpha1.CustomAutoscaler
		_ = s.kube.Get(ctx, client.ObjectKey{Namespace: s.namespace, Name: "digits"}, &ca)
		t.Fatalf("ready replicas %d after 90 s of load, want at least 2; %d of %d requests failed (first: %v); autoscaler status %+v",
			replicas, failed.Load(), sent.Load(), firstFailure.Load(), ca.Status)
	}
	if failed.Load() > 0 {
		t.Fatalf("%d of %d requests failed under load; first: %v", failed.Load(), sent.Load(), firstFailure.Load())
	}
	// The only rule that adds replicas is the response-time rule.
	var ca v1alpha1.CustomAutoscaler
	if err := s.kube.Get(ctx, client.ObjectKey{Namespace: s.namespace, Name: "digits"}, &ca); err != nil {
		t.Fatal(err)
	}
	if ca.Status.LastScaleTime == nil {
		t.Fatal("the autoscaler never scaled")
	}
	t.Logf("%d requests through envoy under load, none failed; %d ready replicas", sent.Load(), replicas)

	want := int(answered.Load())
	testenv.Eventually(t, 30*time.Second, "every request of the run in /proxy/logs", func() error {
		if rows, _ := s.logs("environment="+s.env, 1000); len(rows) != want {
			return fmt.Errorf("%d rows, want %d", len(rows), want)
		}
		return nil
	})
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
func (s *stack) startDemo(replicas int32, startup string, samples int, spec v1alpha1.CustomAutoscalerSpec) *appsv1.Deployment {
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
					Args:           []string{"--listen", "127.0.0.1:8080", "--base-path", "/models/digits", "--samples", strconv.Itoa(samples), "--startup-delay", startup},
					Ports:          []corev1.ContainerPort{{ContainerPort: 8080}},
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
