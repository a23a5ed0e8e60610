package tests

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
	"github.com/nemesis-ml/nemesis/internal/dev/servers"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

// podModel is a model Deployment the local runtime runs, with its Service
// and CustomAutoscaler.
type podModel struct {
	name     string
	replicas int32
	command  []string
	// port is the model's port, the one the sidecar fronts; readyPath is
	// its HTTP readiness path, "" to count an open port as ready (gRPC).
	port        int32
	readyPath   string
	appProtocol *string
	route       v1alpha1.Route
}

// deploy creates the model's objects. A model at zero replicas gets a
// scale-to-zero rule that keeps it up for the whole test once woken; the
// others a rule that never fires.
func (s *stack) deploy(m podModel) *appsv1.Deployment {
	s.t.Helper()
	lbls := map[string]string{"app": m.name}
	c := corev1.Container{Name: "model", Image: "none", Command: m.command, Ports: []corev1.ContainerPort{{ContainerPort: m.port}}}
	if m.readyPath != "" {
		c.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: m.readyPath, Port: intstr.FromInt32(m.port)}}}
	}
	deploy := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: m.name, Namespace: s.namespace, Labels: map[string]string{localruntime.LabelLocalRuntime: "true"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(m.replicas),
			Selector: &metav1.LabelSelector{MatchLabels: lbls},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: lbls},
				Spec:       corev1.PodSpec{TerminationGracePeriodSeconds: ptr.To[int64](10), Containers: []corev1.Container{c}},
			},
		},
	}
	route := m.route
	route.Environment, route.Service, route.Port = s.env, m.name, 80
	spec := v1alpha1.CustomAutoscalerSpec{
		ScaleTargetRef: v1alpha1.ScaleTargetReference{APIVersion: "apps/v1", Kind: "Deployment", Name: m.name},
		MinReplicas:    1, MaxReplicas: 4, Route: &route,
		Rules: []v1alpha1.ScalingRule{{ID: "never", Action: v1alpha1.ActionIncreaseInstances, Thresholds: []v1alpha1.Threshold{
			{MetricType: v1alpha1.MetricCPUUsage, Operator: v1alpha1.OperatorGreaterThan, Value: 1e9},
		}}},
	}
	if m.replicas == 0 {
		spec.MinReplicas = 0
		spec.Rules = []v1alpha1.ScalingRule{{ID: "idle", Action: v1alpha1.ActionDecreaseInstancesToZero, Thresholds: []v1alpha1.Threshold{
			{MetricType: v1alpha1.MetricRequestRate, Operator: v1alpha1.OperatorEqualTo, Value: 0},
		}}}
		spec.ScaleToZero = &v1alpha1.ScaleToZero{IdlePeriodSeconds: 3600, HoldTimeoutSeconds: 120}
	}
	objs := []client.Object{
		deploy,
		&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: m.name, Namespace: s.namespace},
			Spec: corev1.ServiceSpec{Selector: lbls, Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), AppProtocol: m.appProtocol},
			}},
		},
		&v1alpha1.CustomAutoscaler{ObjectMeta: metav1.ObjectMeta{Name: m.name, Namespace: s.namespace}, Spec: spec},
	}
	for _, o := range objs {
		if err := s.kube.Create(s.t.Context(), o); err != nil {
			s.t.Fatal(err)
		}
	}
	return deploy
}

// python returns the interpreter of make tools' venv (MLServer and the
// clients).
func python(t *testing.T) string {
	t.Helper()
	p := filepath.Join(testenv.RepoRoot(t), ".tools", "venv", "bin", "python")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%v: run make tools", err)
	}
	return p
}

// mlserver is MLServer serving the digits classifier as model name, its
// HTTP port fronted by the sidecar when grpc is false, its gRPC port when
// it is true.
func mlserver(t *testing.T, name string, grpc bool, route v1alpha1.Route) podModel {
	m := podModel{
		name: name,
		command: []string{python(t), filepath.Join(testenv.RepoRoot(t), "internal", "dev", "pymodels", "mlserver_digits.py"),
			"--name", name, "--http-port", "8080", "--grpc-port", "8081", "--metrics-port", "8082"},
		port: 8080, readyPath: "/v2/health/ready", route: route,
	}
	if grpc {
		// MLServer opens its gRPC port once the model is loaded.
		m.port, m.readyPath = 8081, ""
	}
	return m
}

// textModel is nemesis-dev text-model under prefix, each token taking delay.
func textModel(name, prefix string, delay time.Duration, replicas int32) podModel {
	return podModel{
		name: name, replicas: replicas,
		command: []string{"nemesis", "text-model", "--listen", "127.0.0.1:8080", "--base-path", prefix, "--token-delay", delay.String()},
		port:    8080, readyPath: "/ready", route: v1alpha1.Route{PathPrefix: prefix},
	}
}

// client runs one of tests/clients with the venv's Python and returns its
// output; it fails the test when the client fails, unless mayFail.
func runClient(t *testing.T, mayFail bool, script string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, python(t), append([]string{filepath.Join(testenv.RepoRoot(t), "tests", "clients", script)}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil && !mayFail {
		t.Fatalf("%s %s: %v\n%s", script, strings.Join(args, " "), err, out)
	}
	return string(out), err
}

// The Open Inference Protocol through Envoy with NVIDIA's tritonclient:
// MLServer models at zero replicas, one over HTTP routed by path, two over
// gRPC on the same service path told apart by :authority and by a header;
// the first calls are held while each model wakes, then answered with the
// right class, and a call that matches neither gRPC route reaches no model.
func TestOpenInferenceProtocolOverHTTPAndGRPCFromZero(t *testing.T) {
	s := newStack(t)
	envoy := s.startEnvoy()
	s.waitConnected(1)
	s.startRuntime(slog.New(slog.DiscardHandler))
	const grpcService = "/inference.GRPCInferenceService/"
	s.deploy(mlserver(t, "digits-http", false, v1alpha1.Route{PathPrefix: "/v2/models/digits-http"}))
	byHost := mlserver(t, "digits-a", true, v1alpha1.Route{PathPrefix: grpcService, Hosts: []string{"digits-a.models.local"}})
	byHost.appProtocol = ptr.To("kubernetes.io/h2c")
	s.deploy(byHost)
	s.deploy(mlserver(t, "digits-b", true, v1alpha1.Route{PathPrefix: grpcService, Protocol: "h2c",
		Headers: []v1alpha1.HeaderMatch{{Name: "x-model", Value: "digits-b"}}}))
	for _, name := range []string{"digits-http", "digits-a", "digits-b"} {
		s.waitActivatorOnRoute(envoy, s.namespace+"/"+name, true)
		s.waitDecided(name)
	}

	envoyAddr := fmt.Sprintf("127.0.0.1:%d", s.envoyPort)
	calls := map[string][]string{
		"http":           {"--url", envoyAddr, "--protocol", "http", "--model", "digits-http", "--digit", "7"},
		"grpc by host":   {"--url", envoyAddr, "--protocol", "grpc", "--model", "digits-a", "--authority", "digits-a.models.local", "--digit", "3"},
		"grpc by header": {"--url", envoyAddr, "--protocol", "grpc", "--model", "digits-b", "--header", "x-model=digits-b", "--digit", "4"},
	}
	// Held while the three wake at once, then answered.
	var wg sync.WaitGroup
	for name, args := range calls {
		wg.Go(func() {
			out, err := runClient(t, true, "triton_digits.py", args...)
			if err != nil {
				t.Errorf("%s from zero: %v\n%s", name, err, out)
				return
			}
			t.Logf("%s from zero: %s", name, strings.TrimSpace(out))
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for name, args := range calls {
		out, _ := runClient(t, false, "triton_digits.py", args...)
		t.Logf("%s warm: %s", name, strings.TrimSpace(out))
	}
	// digits-a's route needs its host: without it the call matches no
	// route; with digits-b's header it reaches digits-b, which has no
	// model digits-a.
	for _, args := range [][]string{
		{"--url", envoyAddr, "--protocol", "grpc", "--model", "digits-a", "--timeout", "10"},
		{"--url", envoyAddr, "--protocol", "grpc", "--model", "digits-a", "--header", "x-model=digits-b", "--timeout", "10"},
	} {
		if out, err := runClient(t, true, "triton_digits.py", args...); err == nil {
			t.Errorf("%v answered: %s", args, out)
		}
	}
}

// tokenRun is one completion streamed by the openai client.
type tokenRun struct {
	Tokens []string  `json:"tokens"`
	TTFT   float64   `json:"ttft_ms"`
	Gaps   []float64 `json:"gaps_ms"`
}

// streamCompletion streams max tokens from base with the openai client.
func streamCompletion(t *testing.T, base string, max int) tokenRun {
	t.Helper()
	out, _ := runClient(t, false, "openai_stream.py", "--base-url", base, "--max-tokens", strconv.Itoa(max))
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var run tokenRun
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &run); err != nil {
		t.Fatalf("summary of %q: %v", out, err)
	}
	return run
}

// checkStreamed fails unless the tokens came one by one: a buffered answer
// arrives at once, a streamed one spread over the tokens' delays.
func checkStreamed(t *testing.T, what string, run tokenRun, n int, delay time.Duration) {
	t.Helper()
	spread := 0.0
	for _, g := range run.Gaps {
		spread += g
	}
	if len(run.Tokens) != n || spread < float64((n-2)*int(delay/time.Millisecond)) {
		t.Fatalf("%s: %d tokens spread over %.1f ms, want %d over at least %d ms", what, len(run.Tokens), spread, n, (n-2)*int(delay/time.Millisecond))
	}
	t.Logf("%s: %d tokens, first after %.1f ms, gaps %v ms", what, n, run.TTFT, run.Gaps)
}

// Token streaming with the openai client, a WebSocket round trip and a
// 64 MB upload, through Envoy and the sidecar; the stream also from zero.
func TestStreamsWebSocketsAndBigBodiesThroughEnvoy(t *testing.T) {
	s := newStack(t)
	envoy := s.startEnvoy()
	s.waitConnected(1)
	s.startRuntime(slog.New(slog.DiscardHandler))
	const delay = 40 * time.Millisecond
	s.deploy(textModel("chat", "/models/chat", delay, 1))
	s.deploy(textModel("chat-zero", "/models/chat-zero", delay, 0))
	s.waitActivatorOnRoute(envoy, s.namespace+"/chat-zero", true)
	s.waitDecided("chat-zero")
	s.waitActivatorOnRoute(envoy, s.namespace+"/chat", false)
	base := fmt.Sprintf("http://127.0.0.1:%d", s.envoyPort)

	checkStreamed(t, "from zero", streamCompletion(t, base+"/models/chat-zero/v1", 8), 8, delay)
	checkStreamed(t, "warm", streamCompletion(t, base+"/models/chat/v1", 8), 8, delay)

	out, _ := runClient(t, false, "ws_echo.py", "--url", fmt.Sprintf("ws://127.0.0.1:%d/models/chat/v1/echo", s.envoyPort))
	t.Logf("websocket: %s", strings.TrimSpace(out))

	const size = 64 << 20
	before := envoyStat(t, envoy, "server.memory_allocated")
	body := io.LimitReader(rand.NewChaCha8([32]byte{7}), size)
	want := sha256.New()
	_, _ = io.Copy(want, io.LimitReader(rand.NewChaCha8([32]byte{7}), size))
	start := time.Now()
	resp, err := http.Post(base+"/models/chat/v1/uploads", "application/octet-stream", body)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Bytes  int64  `json:"bytes"`
		SHA256 string `json:"sha256"`
	}
	err = json.NewDecoder(resp.Body).Decode(&got)
	_ = resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || got.Bytes != size || got.SHA256 != hex.EncodeToString(want.Sum(nil)) {
		t.Fatalf("upload: %d %+v %v", resp.StatusCode, got, err)
	}
	// Envoy streamed it: it never held more than a small part of it.
	grown := envoyStat(t, envoy, "server.memory_allocated") - before
	t.Logf("64 MiB upload in %v; Envoy's allocated memory grew by %d KiB", time.Since(start).Round(time.Millisecond), grown>>10)
	if grown > size/4 {
		t.Fatalf("Envoy's allocated memory grew by %d bytes for a %d-byte upload: it buffered the body", grown, size)
	}
}

// Under steady load, the model scaled from 4 replicas to 1: no request
// fails, as the client, Envoy's 5xx counter and the proxy logs agree.
func TestScaleDownUnderLoadFailsNoRequest(t *testing.T) {
	s := newStack(t)
	envoy := s.startEnvoy()
	s.waitConnected(1)
	s.startRuntime(slog.New(slog.DiscardHandler))
	deploy := s.deploy(textModel("steady", "/models/steady", 5*time.Millisecond, 4))
	cluster := s.namespace + "/steady"
	s.waitHosts(envoy, cluster, 4)

	url := fmt.Sprintf("http://127.0.0.1:%d/models/steady/v1/completions", s.envoyPort)
	var sent, failed atomic.Int64
	var firstFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			c := &http.Client{Timeout: 30 * time.Second}
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Post(url, "application/json", strings.NewReader(`{"model":"ngram","prompt":"A pod","max_tokens":2}`))
				code := 0
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close()
					code = resp.StatusCode
				}
				sent.Add(1)
				if code != http.StatusOK {
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("%d %v", code, err))
				}
			}
		})
	}
	time.Sleep(2 * time.Second)
	var d appsv1.Deployment
	if err := s.kube.Get(t.Context(), client.ObjectKeyFromObject(deploy), &d); err != nil {
		t.Fatal(err)
	}
	d.Spec.Replicas = ptr.To[int32](1)
	if err := s.kube.Update(t.Context(), &d); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 60*time.Second, "three pods gone", func() error {
		var pods corev1.PodList
		if err := s.kube.List(t.Context(), &pods, client.InNamespace(s.namespace), client.MatchingLabels{"app": "steady"}); err != nil {
			return err
		}
		if len(pods.Items) != 1 {
			return fmt.Errorf("%d pods", len(pods.Items))
		}
		return nil
	})
	s.waitHosts(envoy, cluster, 1)
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()

	fivexx := envoyCodeStat(t, envoy, "cluster."+cluster+".upstream_rq_5xx")
	retried := envoyStat(t, envoy, "cluster."+cluster+".upstream_rq_retry")
	t.Logf("%d requests while scaling 4 -> 1: %d failed, Envoy 5xx %d, retried %d", sent.Load(), failed.Load(), fivexx, retried)
	if failed.Load() > 0 || fivexx > 0 {
		t.Fatalf("%d of %d requests failed, Envoy counted %d 5xx; first: %v", failed.Load(), sent.Load(), fivexx, firstFailure.Load())
	}
	want := int(sent.Load())
	testenv.Eventually(t, 30*time.Second, "every request in /proxy/logs, none 5xx", func() error {
		rows, _ := s.logs("route="+cluster, 1000)
		bad, _ := s.logs("route="+cluster+"&status=5xx", 1000)
		if len(rows) != want || len(bad) != 0 {
			return fmt.Errorf("%d rows (want %d), %d of them 5xx", len(rows), want, len(bad))
		}
		return nil
	})
}

// envoyCodeStat reads a counter of responses by status class, which Envoy
// creates at the first such response: absent is 0.
func envoyCodeStat(t *testing.T, e *servers.Envoy, name string) int {
	t.Helper()
	out, err := e.Admin(t.Context(), "/stats?filter=^"+regexp.QuoteMeta(name)+"$")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) == "" {
		return 0
	}
	return envoyStat(t, e, name)
}
