// Package cluster_test measures the wake from zero on the real node of
// hack/cluster (manifests-dev and its demo, images from make images): over
// 20 wakes of the demo model, the held request's first byte minus the
// moment the kubelet marked the pod Ready (seen through a watch), beside a
// straight request to the ready model measured in the same run. Run with
// `make bench` after `make images`, as root.
package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/internal/testing/node"
)

const (
	wakes = 20
	seven = `{"image":["........",".#####..",".....#..","....#...","...#....","...#....","...#....","........"]}`
)

// BenchmarkWakeOnRealNode prints the held time beyond the pod's readiness,
// p50 and p99 over 20 wakes, and its ratio to a straight request.
func BenchmarkWakeOnRealNode(b *testing.B) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		b.Fatal(err)
	}
	n, err := node.Start(root)
	if errors.Is(err, node.ErrNotRoot) {
		b.Skip(err)
	}
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if b.Failed() {
			b.Log(n.Dump())
		}
		if err := n.Down(); err != nil {
			b.Error(err)
		}
	}()
	if err := n.ApplyDev(); err != nil {
		b.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", n.Kubeconfig)
	if err != nil {
		b.Fatal(err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	envoy, err := n.Kubectl("-n", "nemesis-system", "get", "service", "envoy", "-o", "jsonpath={.spec.clusterIP}")
	if err != nil {
		b.Fatal(err)
	}
	url := "http://" + envoy + "/models/digits/predict"
	for range b.N {
		var beyond, straight []time.Duration
		for i := range wakes + 1 {
			toZero(b, n)
			ready := watchReady(b, kube)
			fb := predict(b, url)
			readyAt := <-ready
			began := time.Now()
			predict(b, url)
			if i == 0 {
				continue // the first wake also met cold caches
			}
			beyond = append(beyond, fb.Sub(readyAt))
			straight = append(straight, time.Since(began))
		}
		fmt.Printf("real node, %d wakes: held request's first byte − pod Ready  p50 %6.1f ms  p99 %6.1f ms | straight request  p50 %5.1f ms  p99 %5.1f ms | ratio p50 %.1f\n",
			wakes, ms(pct(beyond, 50)), ms(pct(beyond, 99)), ms(pct(straight, 50)), ms(pct(straight, 99)),
			ms(pct(beyond, 50))/ms(pct(straight, 50)))
		b.ReportMetric(ms(pct(beyond, 50)), "beyond-ready-p50-ms")
		b.ReportMetric(ms(pct(beyond, 99)), "beyond-ready-p99-ms")
	}
}

// toZero scales the demo to zero, removes its pods at once and waits until
// the Service has no endpoint left and Envoy had the time to learn it. It
// first lets the last wake's activation lease run out: while it runs the
// controller takes requests as held and would wake the model again.
func toZero(b *testing.B, n *node.Node) {
	time.Sleep(v1alpha1.ActivationLease + time.Second)
	steps := [][]string{
		{"-n", "demo", "scale", "deployment/digits", "--replicas=0"},
		{"-n", "demo", "delete", "pod", "-l", "app.kubernetes.io/name=digits", "--grace-period=1", "--wait=true"},
	}
	for _, args := range steps {
		if _, err := n.Kubectl(args...); err != nil {
			b.Fatal(err)
		}
	}
	deadline := time.Now().Add(time.Minute)
	for {
		out, err := n.Kubectl("-n", "demo", "get", "endpointslices", "-l", "kubernetes.io/service-name=digits",
			"-o", `jsonpath={range .items[*]}{range .endpoints[*]}{.addresses[0]}{"\n"}{end}{end}`)
		if err == nil && strings.TrimSpace(out) == "" {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("digits endpoints left after a minute: %s %v", out, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The control plane pushes the route at zero within a few hundred
	// milliseconds of the slice change; a held request is the point.
	time.Sleep(2 * time.Second)
}

// watchReady reports when the next digits pod turns Ready.
func watchReady(b *testing.B, kube *kubernetes.Clientset) <-chan time.Time {
	w, err := kube.CoreV1().Pods("demo").Watch(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=digits"})
	if err != nil {
		b.Fatal(err)
	}
	ready := make(chan time.Time, 1)
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok || pod.DeletionTimestamp != nil {
				continue
			}
			for _, c := range pod.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					ready <- time.Now()
					return
				}
			}
		}
	}()
	return ready
}

// predict sends the seven and returns when the answer's first byte arrived.
func predict(b *testing.B, url string) time.Time {
	resp, err := http.Post(url, "application/json", strings.NewReader(seven))
	fb := time.Now()
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("POST %s: %d %s", url, resp.StatusCode, body)
	}
	return fb
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
