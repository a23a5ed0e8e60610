package reconciler_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nemesis-ml/nemesis/controller/activation"
	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/controller/decisions"
	"github.com/nemesis-ml/nemesis/controller/podmetric"
	"github.com/nemesis-ml/nemesis/controller/reconciler"
	"github.com/nemesis-ml/nemesis/controller/store"
	"github.com/nemesis-ml/nemesis/internal/dev/servers"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

func TestMain(m *testing.M) { testenv.Run(m) }

// harness is one test's namespace with a Deployment "model" and ready pods
// made by hand (there is no kubelet), a Redis and a controller to start.
type harness struct {
	t     *testing.T
	c     client.Client
	ns    string
	redis *servers.Redis
	store *store.Store
	rdb   *redis.Client
	pods  []string
	// activations is the controller's in-process wakes, as serve's
	// activator gives them.
	activations *activation.Local
	// decisions is what the controller gave the decision record.
	decisions *decisionLog
}

// decisionLog keeps the decision record in memory, as the controller hands
// it over (decisions.Writer takes it from there; its tests cover the
// PostgreSQL side).
type decisionLog struct {
	mu      sync.Mutex
	records []decisions.Record
	pods    []decisions.PodStages
}

func (l *decisionLog) PodStages(p decisions.PodStages) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pods = append(l.pods, p)
}

func (l *decisionLog) podStages() []decisions.PodStages {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.pods)
}

func (l *decisionLog) Record(r decisions.Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r)
}

func (l *decisionLog) all() []decisions.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.records)
}

func (h *harness) redisClient() *redis.Client { return h.rdb }

func newHarness(t *testing.T, replicas int32, pods int) *harness {
	t.Helper()
	c := testenv.KubeClient(t)
	r := testenv.Redis(t)
	rdb := testenv.RedisClient(t, r)
	h := &harness{t: t, c: c, redis: r, rdb: rdb, store: store.New(rdb, time.Hour), activations: activation.NewLocal(),
		decisions: &decisionLog{}}
	ctx := t.Context()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "ca-"}}
	if err := c.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	h.ns = ns.Name
	labels := map[string]string{"app": "model"}
	deploy := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "model", Namespace: h.ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "model", Image: "model:1"}}},
			},
		},
	}
	if err := c.Create(ctx, deploy); err != nil {
		t.Fatal(err)
	}
	for i := range pods {
		pod := h.addPod(fmt.Sprintf("model-%d", i), true)
		h.pods = append(h.pods, h.ns+"/"+pod.Name)
	}
	return h
}

// addPod creates a pod of the model, made ready when ready is true.
func (h *harness) addPod(name string, ready bool) *corev1.Pod {
	h.t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: h.ns, Labels: map[string]string{"app": "model"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "model", Image: "model:1"}}},
	}
	if err := h.c.Create(h.t.Context(), pod); err != nil {
		h.t.Fatal(err)
	}
	if ready {
		h.setReady(pod)
	}
	return pod
}

// setReady sets the pod's Ready condition, as its kubelet would.
func (h *harness) setReady(pod *corev1.Pod) {
	h.t.Helper()
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	if err := h.c.Status().Update(h.t.Context(), pod); err != nil {
		h.t.Fatal(err)
	}
}

type rule struct {
	id     string
	action v1alpha1.Action
	metric v1alpha1.MetricType
	op     v1alpha1.Operator
	value  float64
}

// autoscaler creates the CustomAutoscaler "model" with windows of one
// second, so that tests move as fast as samples change.
func (h *harness) autoscaler(min, max int32, upWindow, downWindow int32, rules ...rule) *v1alpha1.CustomAutoscaler {
	h.t.Helper()
	ca := &v1alpha1.CustomAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: "model", Namespace: h.ns},
		Spec: v1alpha1.CustomAutoscalerSpec{
			ScaleTargetRef: v1alpha1.ScaleTargetReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "model"},
			MinReplicas:    min, MaxReplicas: max,
			Behavior: &v1alpha1.Behavior{
				ScaleUp:   &v1alpha1.ScalingPolicy{StabilizationWindowSeconds: ptr.To(upWindow)},
				ScaleDown: &v1alpha1.ScalingPolicy{StabilizationWindowSeconds: ptr.To(downWindow)},
			},
			ScaleToZero: &v1alpha1.ScaleToZero{IdlePeriodSeconds: 3},
		},
	}
	for _, r := range rules {
		ca.Spec.Rules = append(ca.Spec.Rules, v1alpha1.ScalingRule{
			ID: r.id, Action: r.action, WindowSeconds: 1,
			Thresholds: []v1alpha1.Threshold{{MetricType: r.metric, Operator: r.op, Value: r.value}},
		})
	}
	if err := h.c.Create(h.t.Context(), ca); err != nil {
		h.t.Fatal(err)
	}
	return ca
}

// start runs a controller until the returned stop is called or the test ends.
func (h *harness) start() (stop func()) {
	h.t.Helper()
	mgr, err := reconciler.NewManager(testenv.Kube(h.t), reconciler.Options{
		Store: h.store, Registerer: prometheus.NewRegistry(), Log: testr.New(h.t),
		LeaderElection: true, LeaderElectionNamespace: h.ns,
		Resync: 300 * time.Millisecond, Retry: 300 * time.Millisecond, Activations: h.activations,
		Decisions: h.decisions,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				h.t.Errorf("controller: %v", err)
			}
		})
	}
	h.t.Cleanup(stop)
	return stop
}

// push stores one sample per pod, as the sidecars would.
func (h *harness) push(cpu, rate float64) {
	h.t.Helper()
	now := time.Now()
	samples := make([]podmetric.Sample, len(h.pods))
	for i, id := range h.pods {
		samples[i] = podmetric.Sample{ID: id, CPUUsage: cpu, RequestRate: rate, ReceivedAt: now}
	}
	if err := h.store.Append(h.t.Context(), samples); err != nil {
		h.t.Fatal(err)
	}
}

// pushing pushes for the pods of the harness at the time of the call, every
// 100 ms, until the returned stop is called.
func (h *harness) pushing(cpu, rate float64) (stop func()) {
	pods := h.pods
	ctx, cancel := context.WithCancel(h.t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			now := time.Now()
			samples := make([]podmetric.Sample, len(pods))
			for i, id := range pods {
				samples[i] = podmetric.Sample{ID: id, CPUUsage: cpu, RequestRate: rate, ReceivedAt: now}
			}
			_ = h.store.Append(ctx, samples) // fails while a test has Redis stopped
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return func() { cancel(); <-done }
}

func (h *harness) replicas() int32 {
	h.t.Helper()
	d := &appsv1.Deployment{}
	if err := h.c.Get(h.t.Context(), client.ObjectKey{Namespace: h.ns, Name: "model"}, d); err != nil {
		h.t.Fatal(err)
	}
	return *d.Spec.Replicas
}

func (h *harness) get() *v1alpha1.CustomAutoscaler {
	h.t.Helper()
	ca := &v1alpha1.CustomAutoscaler{}
	if err := h.c.Get(h.t.Context(), client.ObjectKey{Namespace: h.ns, Name: "model"}, ca); err != nil {
		h.t.Fatal(err)
	}
	return ca
}

// track records every replica count the Deployment goes through, with the
// time it was seen, until the test ends; history returns them. It watches
// from the listed resourceVersion, so no change is missed however quickly
// the next one follows (a poll saw 1 2 4 once when 2→3→4 came within its
// interval).
type change struct {
	replicas int32
	at       time.Time
}

func (h *harness) track() (history func() []change) {
	h.t.Helper()
	var mu sync.Mutex
	var seen []change
	record := func(d *appsv1.Deployment) {
		mu.Lock()
		defer mu.Unlock()
		if len(seen) == 0 || seen[len(seen)-1].replicas != *d.Spec.Replicas {
			seen = append(seen, change{*d.Spec.Replicas, time.Now()})
		}
	}
	deployments := kubernetes.NewForConfigOrDie(testenv.Kube(h.t)).AppsV1().Deployments(h.ns)
	byName := "metadata.name=model"
	list, err := deployments.List(h.t.Context(), metav1.ListOptions{FieldSelector: byName})
	if err != nil || len(list.Items) != 1 {
		h.t.Fatalf("list the Deployment to track: %v (%d found)", err, len(list.Items))
	}
	record(&list.Items[0])
	ctx, cancel := context.WithCancel(context.Background())
	w, err := watchtools.NewRetryWatcherWithContext(ctx, list.ResourceVersion, &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = byName
			return deployments.Watch(ctx, o)
		},
	})
	if err != nil {
		cancel()
		h.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			if d, ok := ev.Object.(*appsv1.Deployment); ok {
				record(d)
			}
		}
	}()
	h.t.Cleanup(func() { cancel(); w.Stop(); <-done })
	return func() []change {
		mu.Lock()
		defer mu.Unlock()
		return append([]change(nil), seen...)
	}
}

// eventually polls cond until it holds or the timeout passes.
func (h *harness) eventually(timeout time.Duration, what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("after %s: %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// steady asserts that the replica count stays want for d.
func (h *harness) steady(d time.Duration, want int32, why string) {
	h.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if got := h.replicas(); got != want {
			h.t.Fatalf("replicas moved to %d, want held at %d: %s", got, want, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (h *harness) condition(typ string) *metav1.Condition {
	return meta.FindStatusCondition(h.get().Status.Conditions, typ)
}

func counts(history []change) []int32 {
	out := make([]int32, len(history))
	for i, c := range history {
		out[i] = c.replicas
	}
	return out
}

// waitObserved waits until a controller has reconciled the autoscaler, so
// that a single sample pushed next is not older than the rules' one-second
// window by the time the controller holds the leader lease.
func (h *harness) waitObserved() {
	h.t.Helper()
	h.eventually(30*time.Second, "the controller reconciles the autoscaler", func() bool {
		ca := h.get()
		return ca.Status.ObservedGeneration == ca.Generation
	})
}
