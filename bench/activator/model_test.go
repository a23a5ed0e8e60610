package activator_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
	"github.com/nemesis-ml/nemesis/xds"
)

// model is the Deployment "bench" at zero, its Service and CustomAutoscaler,
// and a fake kubelet: when it sees the replicas go to 1 it sends the time on
// up, waits the start-up delay and creates the ready EndpointSlice of a
// server on a test host, sends the slice's time on ready, then waits for every Envoy's ACK of the endpoint
// and sends a request straight to Envoy, whose first byte minus the slice's
// time goes to direct; when they go to 0 it deletes the slice.
type model struct {
	kube   client.WithWatch
	ns     string
	cp     *xds.ControlPlane
	url    string
	up     chan time.Time
	ready  chan time.Time
	direct chan time.Duration
}

func (m *model) route() string { return m.ns + "/bench" }

func newModel(b *testing.B, ctx context.Context, kube client.WithWatch, ns string, cp *xds.ControlPlane, url string) *model {
	m := &model{kube: kube, ns: ns, cp: cp, url: url, up: make(chan time.Time, 1), ready: make(chan time.Time, 1), direct: make(chan time.Duration, 1)}
	host := testenv.NewHost(b)
	l := host.Listen(b)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "bench")
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	b.Cleanup(func() { _ = srv.Close() })
	_, port, _ := net.SplitHostPort(l.Addr().String())
	p, _ := strconv.Atoi(port)

	for _, o := range testenv.ModelAtZero(ns, "bench", v1alpha1.CustomAutoscalerSpec{
		MinReplicas: 0, MaxReplicas: 1,
		Route: &v1alpha1.Route{Environment: env, PathPrefix: "/models/bench"},
		Rules: []v1alpha1.ScalingRule{{ID: "never", Action: v1alpha1.ActionIncreaseInstances,
			Thresholds: []v1alpha1.Threshold{{MetricType: v1alpha1.MetricCPUUsage, Operator: v1alpha1.OperatorGreaterThan, Value: 1e9}}}},
	}) {
		if err := kube.Create(ctx, o); err != nil {
			b.Fatal(err)
		}
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "bench-0", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: "bench"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{host.Addr}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(p))}},
	}
	w, err := kube.Watch(ctx, &appsv1.DeploymentList{}, client.InNamespace(ns), client.MatchingFields{"metadata.name": "bench"})
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		defer w.Stop()
		up := false
		for ev := range w.ResultChan() {
			d, ok := ev.Object.(*appsv1.Deployment)
			if !ok {
				continue
			}
			switch want := *d.Spec.Replicas > 0; {
			case want && !up:
				up = true
				m.up <- time.Now()
				time.Sleep(startup)
				if err := kube.Create(ctx, slice.DeepCopy()); err != nil {
					if ctx.Err() == nil {
						b.Error(err)
					}
					return
				}
				ready := time.Now()
				m.ready <- ready
				go m.straight(ctx, ready)
			case !want && up:
				up = false
				if err := kube.Delete(ctx, slice.DeepCopy()); err != nil {
					if ctx.Err() == nil {
						b.Error(err)
					}
					return
				}
			}
		}
	}()
	return m
}

// straight waits for the ACK of the endpoint and sends a request to Envoy.
func (m *model) straight(ctx context.Context, ready time.Time) {
	if err := m.cp.WaitReady(ctx, env, m.route()); err != nil {
		m.direct <- 0
		return
	}
	resp, err := http.Get(m.url)
	fb := time.Now()
	if err == nil {
		_ = resp.Body.Close()
	}
	m.direct <- fb.Sub(ready)
}

// scaleToZero sets the Deployment's replicas to 0, as the controller does
// after the idle period.
func (m *model) scaleToZero(b *testing.B) {
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "bench", Namespace: m.ns}}
	if err := m.kube.Patch(context.Background(), d, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"replicas":0}}`))); err != nil {
		b.Fatal(err)
	}
}
