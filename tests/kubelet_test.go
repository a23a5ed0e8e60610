package tests

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/controller/podmetric"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

// model is a Deployment at zero replicas with its Service and a
// CustomAutoscaler that scales it to zero after idle seconds of no requests,
// and a fake kubelet that plays the Deployment's one pod: when the replicas
// go from 0 to 1 it waits the model's start-up delay, starts the model's
// server on a test host, creates its ready Pod and the EndpointSlice, and
// pushes the pod's samples; when they go back to 0 it removes them and stops
// the server. A model that never becomes ready is woken but gets no slice.
type model struct {
	s       *stack
	name    string
	host    *testenv.Host
	startup time.Duration
	never   bool
	// idle makes the pushed samples show no requests.
	idle atomic.Bool

	mu      sync.Mutex
	wokenAt []time.Time // when the kubelet saw replicas go to 1
	readyAt []time.Time // when the EndpointSlice was created
}

func (s *stack) newModel(name string, startup time.Duration, never bool, holdSeconds int32) *model {
	s.t.Helper()
	m := &model{s: s, name: name, host: testenv.NewHost(s.t), startup: startup, never: never}
	ctx := s.t.Context()
	objs := testenv.ModelAtZero(s.namespace, name, v1alpha1.CustomAutoscalerSpec{
		MinReplicas: 0, MaxReplicas: 3,
		Route: &v1alpha1.Route{Environment: s.env, PathPrefix: "/models/" + name},
		Rules: []v1alpha1.ScalingRule{{ID: "idle", Action: v1alpha1.ActionDecreaseInstancesToZero, WindowSeconds: 2,
			Thresholds: []v1alpha1.Threshold{{MetricType: v1alpha1.MetricRequestRate, Operator: v1alpha1.OperatorEqualTo, Value: 0}}}},
		ScaleToZero: &v1alpha1.ScaleToZero{IdlePeriodSeconds: 3, HoldTimeoutSeconds: holdSeconds},
	})
	for _, o := range objs {
		if err := s.kube.Create(ctx, o); err != nil {
			s.t.Fatal(err)
		}
	}
	go m.run()
	return m
}

func (m *model) key() client.ObjectKey {
	return client.ObjectKey{Namespace: m.s.namespace, Name: m.name}
}

func (m *model) podID() string { return m.s.namespace + "/" + m.name + "-0" }

// run watches the Deployment until the test ends.
func (m *model) run() {
	t, ctx := m.s.t, m.s.t.Context()
	wc, err := client.NewWithWatch(testenv.Kube(t), client.Options{Scheme: m.s.kube.Scheme()})
	if err != nil {
		t.Error(err)
		return
	}
	w, err := wc.Watch(ctx, &appsv1.DeploymentList{}, client.InNamespace(m.s.namespace), client.MatchingFields{"metadata.name": m.name})
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
			stop = func() {}
			if !m.never {
				time.Sleep(m.startup)
				stop = m.start()
			}
		case !up && stop != nil:
			stop()
			stop = nil
		}
	}
}

// start runs the model's server, makes its pod and slice ready and pushes
// samples; the returned func undoes it all.
func (m *model) start() func() {
	t, ctx := m.s.t, m.s.t.Context()
	l := m.host.Listen(t)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, m.name)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	_, portStr, _ := net.SplitHostPort(l.Addr().String())
	port, _ := strconv.Atoi(portStr)

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: m.name + "-0", Namespace: m.s.namespace, Labels: map[string]string{"app": m.name}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "model", Image: "model:1"}}},
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: m.name + "-0", Namespace: m.s.namespace,
			Labels: map[string]string{discoveryv1.LabelServiceName: m.name},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{m.host.Addr}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(port))}},
	}
	if err := m.s.kube.Create(ctx, pod); err != nil {
		t.Error(err)
	}
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	if err := m.s.kube.Status().Update(ctx, pod); err != nil {
		t.Error(err)
	}
	if err := m.s.kube.Create(ctx, slice); err != nil {
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
		_ = m.s.kube.Delete(ctx, slice)
		_ = m.s.kube.Delete(ctx, pod, client.GracePeriodSeconds(0))
		_ = srv.Close()
	}
}

// push sends one sample of the pod, as its sidecar would.
func (m *model) push() {
	rate := 5.0
	if m.idle.Load() {
		rate = 0
	}
	body, _ := json.Marshal(podmetric.Sample{ID: m.podID(), RequestRate: rate, ReceivedAt: time.Now()})
	resp, err := http.Post(m.s.apiURL+"/metrics", "application/json", bytes.NewReader(body))
	if err != nil {
		return
	}
	_ = resp.Body.Close()
}

func (m *model) replicas() int32 {
	m.s.t.Helper()
	d := &appsv1.Deployment{}
	if err := m.s.kube.Get(m.s.t.Context(), m.key(), d); err != nil {
		m.s.t.Fatal(err)
	}
	return *d.Spec.Replicas
}

// lastWake returns when the kubelet last saw the model woken and when its
// slice was last made ready.
func (m *model) lastWake() (woken, ready time.Time, wakes int) {
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
