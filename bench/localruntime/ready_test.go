// Package localruntime_test measures how soon the local runtime lists a pod as
// ready in its EndpointSlice once the model has loaded (the runtime's share
// of a wake from zero), against a bare EndpointSlice write seen through a
// watch, measured in the same run. Run with `make bench`.
package localruntime_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/nemesis-ml/nemesis/internal/dev/localruntime"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

var nemesisBin string

func TestMain(m *testing.M) { testenv.RunWithNemesis(m, &nemesisBin) }

const trials = 15

func BenchmarkModelReadyToEndpoint(b *testing.B) {
	cs, err := kubernetes.NewForConfig(testenv.Kube(b))
	if err != nil {
		b.Fatal(err)
	}
	ctx := testenv.Context(b, 10*time.Minute)
	ns, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "bench-"}}, metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	lbls := map[string]string{"app": "digits"}
	if _, err := cs.CoreV1().Services(ns.Name).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "digits"},
		Spec:       corev1.ServiceSpec{Selector: lbls, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}},
	}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	deploy, err := cs.AppsV1().Deployments(ns.Name).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "digits", Labels: map[string]string{localruntime.LabelLocalRuntime: "true"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](0),
			Selector: &metav1.LabelSelector{MatchLabels: lbls},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: lbls},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "model", Image: "nemesis", Command: []string{"nemesis", "demo-model"},
					Args:           []string{"--listen", "127.0.0.1:8080", "--samples", "1000", "--startup-delay", "300ms"},
					Ports:          []corev1.ContainerPort{{ContainerPort: 8080}},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(8080)}}},
				}}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	node := fmt.Sprintf("bench-%d", testenv.Port(b))
	dir := testenv.Dir(b, "pods")
	rt, err := localruntime.New(localruntime.Config{
		Kube: testenv.Kube(b), Node: node, Namespace: ns.Name, Dir: dir, Nemesis: nemesisBin,
		Log: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	rtCtx, stopRuntime := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(rtCtx) }()
	b.Cleanup(func() { stopRuntime(); <-done })

	w, err := cs.DiscoveryV1().EndpointSlices(ns.Name).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	// waitSlice returns when a watched slice named name satisfies ok.
	waitSlice := func(name string, ok func(*discoveryv1.EndpointSlice) bool) (*discoveryv1.EndpointSlice, time.Time) {
		for {
			select {
			case ev := <-w.ResultChan():
				if sl, isSlice := ev.Object.(*discoveryv1.EndpointSlice); isSlice && sl.Name == name && ok(sl) {
					return sl, time.Now()
				}
			case <-ctx.Done():
				b.Fatal("timed out waiting for the slice")
			}
		}
	}
	scale := func(n int32) {
		patch := fmt.Appendf(nil, `{"spec":{"replicas":%d}}`, n)
		if _, err := cs.AppsV1().Deployments(ns.Name).Patch(ctx, deploy.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	readyEndpoints := func(sl *discoveryv1.EndpointSlice) int {
		n := 0
		for _, ep := range sl.Endpoints {
			if ptr.Deref(ep.Conditions.Ready, false) {
				n++
			}
		}
		return n
	}

	var toEndpoint, baseline []time.Duration
	for range b.N {
		toEndpoint, baseline = nil, nil
		for range trials {
			scale(1)
			sl, seen := waitSlice("digits-"+node, func(sl *discoveryv1.EndpointSlice) bool { return readyEndpoints(sl) == 1 })
			loaded, err := modelLoaded(filepath.Join(dir, ns.Name+"_"+sl.Endpoints[0].TargetRef.Name, "model.log"))
			if err != nil {
				b.Fatal(err)
			}
			toEndpoint = append(toEndpoint, seen.Sub(loaded))
			scale(0)
			waitSlice("digits-"+node, func(sl *discoveryv1.EndpointSlice) bool { return len(sl.Endpoints) == 0 })
		}
		// Baseline: one EndpointSlice write, seen through the same watch.
		bare, err := cs.DiscoveryV1().EndpointSlices(ns.Name).Create(ctx, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: "baseline"},
			AddressType: discoveryv1.AddressTypeIPv4,
		}, metav1.CreateOptions{})
		if err != nil {
			b.Fatal(err)
		}
		for i := range trials {
			bare.Endpoints = []discoveryv1.Endpoint{{Addresses: []string{fmt.Sprintf("10.213.255.%d", i+1)}}}
			start := time.Now()
			if bare, err = cs.DiscoveryV1().EndpointSlices(ns.Name).Update(ctx, bare, metav1.UpdateOptions{}); err != nil {
				b.Fatal(err)
			}
			want := bare.Endpoints[0].Addresses[0]
			_, seen := waitSlice("baseline", func(sl *discoveryv1.EndpointSlice) bool {
				return len(sl.Endpoints) == 1 && sl.Endpoints[0].Addresses[0] == want
			})
			baseline = append(baseline, seen.Sub(start))
		}
		if err := cs.DiscoveryV1().EndpointSlices(ns.Name).Delete(ctx, "baseline", metav1.DeleteOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(pct(toEndpoint, 0.5)), "p50-ms")
	b.ReportMetric(ms(pct(toEndpoint, 0.99)), "p99-ms")
	b.ReportMetric(ms(pct(toEndpoint, 0.5))/ms(pct(baseline, 0.5)), "p50-ratio")
	b.Logf("model loaded to ready endpoint over %d wakes: p50 %s p99 %s; bare EndpointSlice write seen by a watch p50 %s p99 %s; ratio p50 %.1f p99 %.1f",
		trials, pct(toEndpoint, 0.5), pct(toEndpoint, 0.99), pct(baseline, 0.5), pct(baseline, 0.99),
		ms(pct(toEndpoint, 0.5))/ms(pct(baseline, 0.5)), ms(pct(toEndpoint, 0.99))/ms(pct(baseline, 0.99)))
}

// modelLoaded reads when the demo model logged that it was loaded (slog
// text, millisecond timestamps).
func modelLoaded(path string) (time.Time, error) {
	f, err := os.Open(path)
	if err != nil {
		return time.Time{}, err
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, `msg="model loaded"`) && strings.HasPrefix(line, "time=") {
			return time.Parse(time.RFC3339Nano, strings.Fields(line)[0][len("time="):])
		}
	}
	return time.Time{}, fmt.Errorf("no \"model loaded\" line in %s", path)
}

func pct(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(int(q*float64(len(s))), len(s)-1)]
}
