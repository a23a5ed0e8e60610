package localruntime_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nemesis-ml/nemesis/internal/dev/localruntime"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

var nemesisBin string

func TestMain(m *testing.M) { testenv.RunWithNemesis(m, &nemesisBin) }

// samples is a stand-in controller on loopback that records POST /metrics.
type samples struct {
	mu  sync.Mutex
	ids map[string]int
	bad int
}

func (s *samples) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var batch []struct{ ID string }
	if r.URL.Path != "/metrics" || r.Header.Get("Authorization") != "Bearer t0ken" || json.NewDecoder(r.Body).Decode(&batch) != nil {
		s.bad++
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	for _, smp := range batch {
		s.ids[smp.ID]++
	}
}

func (s *samples) count(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ids[id]
}

func TestDeploymentRunsAsLocalPodsBehindTheirEndpointSlice(t *testing.T) {
	kube := testenv.KubeClient(t)
	ctx := testenv.Context(t, 3*time.Minute)
	ns := namespace(t, kube)
	controller := &samples{ids: map[string]int{}}
	ctrl := httptest.NewServer(controller)
	t.Cleanup(ctrl.Close)

	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "digits", Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "digits"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}},
		},
	}
	if err := kube.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	const startupDelay = 2 * time.Second
	deploy := demoDeployment(ns, 2, startupDelay)
	if err := kube.Create(ctx, deploy); err != nil {
		t.Fatal(err)
	}

	node := "test-" + strconv.Itoa(testenv.Port(t))
	dir := testenv.Dir(t, "pods")
	stopRuntime := startRuntime(t, localruntime.Config{
		Kube: testenv.Kube(t), Node: node, Namespace: ns, Dir: dir, Nemesis: nemesisBin,
		Controller: ctrl.URL, ControllerToken: "t0ken", EndpointDelay: time.Second,
	})

	// Two pods appear, each with an address of its own; their endpoints are
	// listed but not ready while the model loads, then ready.
	sawLoading := map[string]bool{}
	var endpoints []discoveryv1.Endpoint
	var port int32
	testenv.Eventually(t, 60*time.Second, "two ready endpoints", func() error {
		sl, err := slice(ctx, kube, ns, "digits-"+node)
		if err != nil {
			return err
		}
		endpoints = sl.Endpoints
		for _, ep := range sl.Endpoints {
			if !*ep.Conditions.Ready {
				sawLoading[ep.TargetRef.Name] = true
			}
		}
		if len(sl.Ports) != 1 || *sl.Ports[0].Port != localruntime.SidecarPort || *sl.Ports[0].Name != "http" {
			return fmt.Errorf("ports %v", sl.Ports)
		}
		port = *sl.Ports[0].Port
		ready := 0
		for _, ep := range sl.Endpoints {
			if *ep.Conditions.Ready {
				ready++
			}
		}
		if len(sl.Endpoints) != 2 || ready != 2 {
			return fmt.Errorf("%d endpoints, %d ready", len(sl.Endpoints), ready)
		}
		return nil
	})
	pods := map[string]string{} // name -> IP
	for _, ep := range endpoints {
		pods[ep.TargetRef.Name] = ep.Addresses[0]
		if !sawLoading[ep.TargetRef.Name] {
			t.Errorf("pod %s was never listed as not ready while its model loaded for %s", ep.TargetRef.Name, startupDelay)
		}
		if !strings.HasPrefix(ep.Addresses[0], "10.213.") {
			t.Errorf("pod %s has address %s, want one of 10.213.0.0/16", ep.TargetRef.Name, ep.Addresses[0])
		}
	}
	if len(pods) != 2 {
		t.Fatalf("endpoints name %d pods: %v", len(pods), pods)
	}

	// Each answers predictions through the sidecar, on its own address.
	for name, ip := range pods {
		if digit := predict(t, net.JoinHostPort(ip, strconv.Itoa(int(port)))); digit != 7 {
			t.Errorf("pod %s predicted %d for a 7", name, digit)
		}
		var pod corev1.Pod
		if err := kube.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &pod); err != nil {
			t.Fatal(err)
		}
		if pod.Status.Phase != corev1.PodRunning || pod.Status.PodIP != ip || pod.Spec.NodeName != node ||
			!podReady(&pod) || len(pod.OwnerReferences) != 1 || pod.OwnerReferences[0].UID != deploy.UID {
			t.Errorf("pod %s: phase %s, IP %s, node %s, ready %v, owners %v", name, pod.Status.Phase, pod.Status.PodIP, pod.Spec.NodeName, podReady(&pod), pod.OwnerReferences)
		}
	}
	testenv.Eventually(t, 30*time.Second, "deployment status 2/2", func() error {
		return deploymentStatus(ctx, kube, deploy, 2, 2)
	})
	// The sidecars reach the controller on this namespace's loopback.
	testenv.Eventually(t, 30*time.Second, "samples of both pods", func() error {
		for name := range pods {
			if controller.count(ns+"/"+name) == 0 {
				return fmt.Errorf("no sample of %s yet", name)
			}
		}
		return nil
	})

	// Scale to zero: the endpoints turn not ready while the pods still
	// answer, then the pods, their processes and namespaces are gone.
	scale(t, ctx, kube, deploy, 0)
	servedWhileLeaving := false
	testenv.Eventually(t, 60*time.Second, "no endpoints", func() error {
		sl, err := slice(ctx, kube, ns, "digits-"+node)
		if err != nil {
			return err
		}
		for _, ep := range sl.Endpoints {
			if *ep.Conditions.Ready {
				return fmt.Errorf("endpoint %s still ready", ep.TargetRef.Name)
			}
			if *ep.Conditions.Terminating && !servedWhileLeaving {
				servedWhileLeaving = tryPredict(net.JoinHostPort(ep.Addresses[0], strconv.Itoa(int(port))))
			}
		}
		if len(sl.Endpoints) != 0 {
			return fmt.Errorf("%d endpoints left", len(sl.Endpoints))
		}
		return nil
	})
	if !servedWhileLeaving {
		t.Error("no pod answered after it left the endpoints: it was stopped before it left them")
	}
	assertGone(t, ctx, kube, ns, pods)
	testenv.Eventually(t, 30*time.Second, "deployment status 0/0", func() error {
		return deploymentStatus(ctx, kube, deploy, 0, 0)
	})

	// Back to one, then the runtime stops: it leaves nothing behind.
	scale(t, ctx, kube, deploy, 1)
	testenv.Eventually(t, 60*time.Second, "one ready endpoint", func() error {
		sl, err := slice(ctx, kube, ns, "digits-"+node)
		if err != nil {
			return err
		}
		if len(sl.Endpoints) != 1 || !*sl.Endpoints[0].Conditions.Ready {
			return fmt.Errorf("endpoints %v", sl.Endpoints)
		}
		pods = map[string]string{sl.Endpoints[0].TargetRef.Name: sl.Endpoints[0].Addresses[0]}
		return nil
	})
	if err := stopRuntime(); err != nil {
		t.Fatalf("stopping the runtime: %v", err)
	}
	assertGone(t, ctx, kube, ns, pods)
}

func TestPodDeletedThroughTheAPIIsReplaced(t *testing.T) {
	kube := testenv.KubeClient(t)
	ctx := testenv.Context(t, 2*time.Minute)
	ns := namespace(t, kube)
	deploy := demoDeployment(ns, 1, 0)
	if err := kube.Create(ctx, deploy); err != nil {
		t.Fatal(err)
	}
	node := "test-" + strconv.Itoa(testenv.Port(t))
	startRuntime(t, localruntime.Config{
		Kube: testenv.Kube(t), Node: node, Namespace: ns, Dir: testenv.Dir(t, "pods"), Nemesis: nemesisBin,
	})
	first := readyPod(t, ctx, kube, ns, "")
	if err := kube.Delete(ctx, first); err != nil {
		t.Fatal(err)
	}
	second := readyPod(t, ctx, kube, ns, first.Name)
	assertGone(t, ctx, kube, ns, map[string]string{first.Name: first.Status.PodIP})
	if second.Status.PodIP == "" {
		t.Fatal("replacement has no IP")
	}
}

func TestTemplateWithoutCommandFailsAndIsRetriedWithoutSpinning(t *testing.T) {
	kube := testenv.KubeClient(t)
	ctx := testenv.Context(t, time.Minute)
	ns := namespace(t, kube)
	deploy := demoDeployment(ns, 1, 0)
	deploy.Spec.Template.Spec.Containers[0].Command = nil
	if err := kube.Create(ctx, deploy); err != nil {
		t.Fatal(err)
	}
	var created int
	w, err := watchPods(t, ctx, ns)
	if err != nil {
		t.Fatal(err)
	}
	startRuntime(t, localruntime.Config{
		Kube: testenv.Kube(t), Node: "test-" + strconv.Itoa(testenv.Port(t)), Namespace: ns,
		Dir: testenv.Dir(t, "pods"), Nemesis: nemesisBin,
	})
	deadline := time.After(4 * time.Second)
	failed := false
loop:
	for {
		select {
		case ev := <-w.ResultChan():
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			if ev.Type == "ADDED" {
				created++
			}
			if pod.Status.Phase == corev1.PodFailed && strings.Contains(pod.Status.Message, "set its command") {
				failed = true
			}
		case <-deadline:
			break loop
		}
	}
	w.Stop()
	if !failed {
		t.Error("no pod reported that its container has no command")
	}
	// Backoff: 1 s, 2 s, ... so at most four tries in four seconds.
	if created < 1 || created > 4 {
		t.Errorf("%d pods created in 4 s, want 1 to 4", created)
	}
}

func startRuntime(t *testing.T, cfg localruntime.Config) func() error {
	t.Helper()
	cfg.Log = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	rt, err := localruntime.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	var once sync.Once
	var stopErr error
	stop := func() error {
		once.Do(func() { cancel(); stopErr = <-done })
		return stopErr
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func demoDeployment(ns string, replicas int32, startupDelay time.Duration) *appsv1.Deployment {
	lbls := map[string]string{"app": "digits"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "digits", Namespace: ns, Labels: map[string]string{localruntime.LabelLocalRuntime: "true"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: lbls},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: lbls},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](10),
					Containers: []corev1.Container{{
						Name: "model", Image: "nemesis",
						Command: []string{"nemesis", "demo-model"},
						Args:    []string{"--listen", "127.0.0.1:8080", "--samples", "1000"},
						Env:     []corev1.EnvVar{{Name: "NEMESIS_DEMO_STARTUP_DELAY", Value: startupDelay.String()}},
						Ports:   []corev1.ContainerPort{{ContainerPort: 8080}},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
							HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(8080)},
						}},
					}},
				},
			},
		},
	}
}

var seven = []string{"........", ".#####..", ".....#..", "....#...", "...#....", "...#....", "...#....", "........"}

func predict(t *testing.T, addr string) int {
	t.Helper()
	raw, _ := json.Marshal(map[string]any{"image": seven})
	resp, err := http.Post("http://"+addr+"/predict", "application/json", bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	var p struct{ Digit int }
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &p) != nil {
		t.Fatalf("predict at %s: %d %s", addr, resp.StatusCode, body)
	}
	return p.Digit
}

func tryPredict(addr string) bool {
	raw, _ := json.Marshal(map[string]any{"image": seven})
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Post("http://"+addr+"/predict", "application/json", bytes.NewReader(raw))
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
