// Package fakekubelet plays the one pod of a model for end-to-end tests: it
// creates a Deployment at zero replicas with its Service and a
// CustomAutoscaler (testenv.ModelAtZero), and when the replicas go from 0
// to 1 it creates the Pod, waits the model's start-up delay, starts the
// model's server on a test host of its own, makes the Pod ready, creates
// its EndpointSlice, and pushes the pod's samples to POST /metrics as a
// sidecar would; when they go back to 0 it removes them and stops the server. A model that never becomes
// ready is woken and gets its Pod, never ready, and no slice.
//
// It is not the local runtime (internal/dev/localruntime), which runs real
// commands in network namespaces for `make run`: this one serves a fixed
// answer, so tests control the start-up delay and the load it reports.
package fakekubelet

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/controller/podmetric"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

// Config says which model to play and where.
type Config struct {
	// Kube is a client of the API server the model's objects go to, and
	// KubeConfig its configuration (the watch needs a client of its own).
	Kube       client.Client
	KubeConfig *rest.Config
	Namespace  string
	Name       string
	// Environment is the route's environment; the path prefix is
	// /models/<name>.
	Environment string
	// MetricsURL is the base URL of the controller's POST /metrics, and
	// MetricsToken the bearer token it takes.
	MetricsURL, MetricsToken string
	// Startup is how long the pod takes to become ready after a wake.
	Startup time.Duration
	// NeverReady makes a model that is woken but never gets ready.
	NeverReady bool
	// HoldTimeoutSeconds is the CustomAutoscaler's hold timeout.
	HoldTimeoutSeconds int32
}

// Model is one model at zero and the kubelet playing its pod.
type Model struct {
	t    testing.TB
	cfg  Config
	host *testenv.Host
	// idle makes the pushed samples show no requests.
	idle atomic.Bool

	mu      sync.Mutex
	wokenAt []time.Time // when the kubelet saw replicas go to 1
	readyAt []time.Time // when the EndpointSlice was created
}

// Start creates the model's objects and plays its pod until the test ends.
// Its CustomAutoscaler scales it between 0 and 3 replicas and back to zero
// after 3 idle seconds (no requests in a 2 s window).
func Start(t testing.TB, cfg Config) *Model {
	t.Helper()
	m := &Model{t: t, cfg: cfg, host: testenv.NewHost(t)}
	objs := testenv.ModelAtZero(cfg.Namespace, cfg.Name, v1alpha1.CustomAutoscalerSpec{
		MinReplicas: 0, MaxReplicas: 3,
		Route: &v1alpha1.Route{Environment: cfg.Environment, PathPrefix: "/models/" + cfg.Name},
		Rules: []v1alpha1.ScalingRule{{ID: "idle", Action: v1alpha1.ActionDecreaseInstancesToZero, WindowSeconds: 2,
			Thresholds: []v1alpha1.Threshold{{MetricType: v1alpha1.MetricRequestRate, Operator: v1alpha1.OperatorEqualTo, Value: 0}}}},
		ScaleToZero: &v1alpha1.ScaleToZero{IdlePeriodSeconds: 3, HoldTimeoutSeconds: cfg.HoldTimeoutSeconds},
	})
	for _, o := range objs {
		if err := cfg.Kube.Create(t.Context(), o); err != nil {
			t.Fatal(err)
		}
	}
	go m.run()
	return m
}

// Name is the model's (and its Deployment's and CustomAutoscaler's) name.
func (m *Model) Name() string { return m.cfg.Name }

// Key is the model's namespace/name.
func (m *Model) Key() client.ObjectKey {
	return client.ObjectKey{Namespace: m.cfg.Namespace, Name: m.cfg.Name}
}

// PodID is the pod the samples are pushed for.
func (m *Model) PodID() string { return m.cfg.Namespace + "/" + m.cfg.Name + "-0" }

// SetIdle makes the pushed samples show no requests (true) or some (false).
func (m *Model) SetIdle(idle bool) { m.idle.Store(idle) }

// run watches the Deployment until the test ends.
func (m *Model) run() {
	t, ctx := m.t, m.t.Context()
	wc, err := client.NewWithWatch(m.cfg.KubeConfig, client.Options{Scheme: m.cfg.Kube.Scheme()})
	if err != nil {
		t.Error(err)
		return
	}
	w, err := wc.Watch(ctx, &appsv1.DeploymentList{}, client.InNamespace(m.cfg.Namespace), client.MatchingFields{"metadata.name": m.cfg.Name})
	if err != nil {
		t.Error(err)
		return
	}
	defer w.Stop()
	var stop func()
	for ev := range w.ResultChan() {
		d, ok := ev.Object.(*appsv1.Deployment)
		if !ok {
			continue
		}
		switch up := d.Spec.Replicas != nil && *d.Spec.Replicas > 0; {
		case up && stop == nil:
			m.mu.Lock()
			m.wokenAt = append(m.wokenAt, time.Now())
			m.mu.Unlock()
			pod := m.createPod()
			stop = func() { _ = m.cfg.Kube.Delete(ctx, pod, client.GracePeriodSeconds(0)) }
			if !m.cfg.NeverReady {
				time.Sleep(m.cfg.Startup)
				stop = m.start(pod)
			}
		case !up && stop != nil:
			stop()
			stop = nil
		}
	}
}

// createPod creates the model's pod, not ready yet, as a ReplicaSet would
// on the scale from zero.
func (m *Model) createPod() *corev1.Pod {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: m.cfg.Name + "-0", Namespace: m.cfg.Namespace, Labels: map[string]string{"app": m.cfg.Name}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "model", Image: "model:1"}}},
	}
	if err := m.cfg.Kube.Create(m.t.Context(), pod); err != nil {
		m.t.Error(err)
	}
	return pod
}

// start runs the model's server, makes its pod and slice ready and pushes
// samples; the returned func undoes it all.
func (m *Model) start(pod *corev1.Pod) func() {
	t, ctx, kube := m.t, m.t.Context(), m.cfg.Kube
	l := m.host.Listen(t)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, m.cfg.Name)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	_, portStr, _ := net.SplitHostPort(l.Addr().String())
	port, _ := strconv.Atoi(portStr)

	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: m.cfg.Name + "-0", Namespace: m.cfg.Namespace,
			Labels: map[string]string{discoveryv1.LabelServiceName: m.cfg.Name},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{m.host.Addr}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(port))}},
	}
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	if err := kube.Status().Update(ctx, pod); err != nil {
		t.Error(err)
	}
	if err := kube.Create(ctx, slice); err != nil {
		t.Error(err)
	}
	m.mu.Lock()
	m.readyAt = append(m.readyAt, time.Now())
	m.mu.Unlock()

	done := make(chan struct{})
	pushed := make(chan struct{})
	go func() {
		defer close(pushed)
		tick := time.NewTicker(300 * time.Millisecond)
		defer tick.Stop()
		for {
			m.push()
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return func() {
		close(done)
		<-pushed
		_ = kube.Delete(ctx, slice)
		_ = kube.Delete(ctx, pod, client.GracePeriodSeconds(0))
		_ = srv.Close()
	}
}

// push sends one sample of the pod, as its sidecar would.
func (m *Model) push() {
	rate := 5.0
	if m.idle.Load() {
		rate = 0
	}
	body, _ := json.Marshal(podmetric.Sample{ID: m.PodID(), RequestRate: rate, ReceivedAt: time.Now()})
	req, err := http.NewRequest(http.MethodPost, m.cfg.MetricsURL+"/metrics", bytes.NewReader(body))
	if err != nil {
		return
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+m.cfg.MetricsToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return
	}
	_ = resp.Body.Close()
}

// Replicas returns the Deployment's replicas.
func (m *Model) Replicas() int32 {
	m.t.Helper()
	d := &appsv1.Deployment{}
	if err := m.cfg.Kube.Get(m.t.Context(), m.Key(), d); err != nil {
		m.t.Fatal(err)
	}
	return *d.Spec.Replicas
}

// LastWake returns when the kubelet last saw the model woken, when its
// slice was last made ready, and how many times it was woken.
func (m *Model) LastWake() (woken, ready time.Time, wakes int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.wokenAt) > 0 {
		woken = m.wokenAt[len(m.wokenAt)-1]
	}
	if len(m.readyAt) > 0 {
		ready = m.readyAt[len(m.readyAt)-1]
	}
	return woken, ready, len(m.wokenAt)
}
