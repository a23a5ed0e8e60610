package localruntime_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

func namespace(t *testing.T, kube client.Client) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "localruntime-"}}
	if err := kube.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

func slice(ctx context.Context, kube client.Client, ns, name string) (*discoveryv1.EndpointSlice, error) {
	var sl discoveryv1.EndpointSlice
	err := kube.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &sl)
	return &sl, err
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func deploymentStatus(ctx context.Context, kube client.Client, d *appsv1.Deployment, replicas, ready int32) error {
	var cur appsv1.Deployment
	if err := kube.Get(ctx, client.ObjectKeyFromObject(d), &cur); err != nil {
		return err
	}
	s := cur.Status
	if s.Replicas != replicas || s.ReadyReplicas != ready || s.AvailableReplicas != ready || s.ObservedGeneration != cur.Generation {
		return fmt.Errorf("status %+v", s)
	}
	return nil
}

func scale(t *testing.T, ctx context.Context, kube client.Client, d *appsv1.Deployment, replicas int32) {
	t.Helper()
	patch := client.RawPatch("application/merge-patch+json", fmt.Appendf(nil, `{"spec":{"replicas":%d}}`, replicas))
	if err := kube.Patch(ctx, d.DeepCopy(), patch); err != nil {
		t.Fatal(err)
	}
}

// readyPod waits for a ready pod of the namespace other than skip.
func readyPod(t *testing.T, ctx context.Context, kube client.Client, ns, skip string) *corev1.Pod {
	t.Helper()
	var found *corev1.Pod
	testenv.Eventually(t, 60*time.Second, "a ready pod", func() error {
		var pods corev1.PodList
		if err := kube.List(ctx, &pods, client.InNamespace(ns)); err != nil {
			return err
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			if p.Name != skip && p.DeletionTimestamp == nil && podReady(p) {
				found = p
				return nil
			}
		}
		return fmt.Errorf("%d pods, none ready", len(pods.Items))
	})
	return found
}

// assertGone checks that the pods are gone from the API server and that
// none of their processes or network namespaces is left.
func assertGone(t *testing.T, ctx context.Context, kube client.Client, ns string, pods map[string]string) {
	t.Helper()
	for name, ip := range pods {
		testenv.Eventually(t, 30*time.Second, "pod "+name+" deleted", func() error {
			err := kube.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &corev1.Pod{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("still there (%v)", err)
		})
		if procs := processesOf(name); len(procs) > 0 {
			t.Errorf("processes of pod %s still run: %v", name, procs)
		}
		out, _ := exec.Command("ip", "-o", "addr").CombinedOutput()
		gateway := ip[:strings.LastIndex(ip, ".")+1]
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, " "+gateway) && strings.Contains(line, "nmo") {
				t.Errorf("the link of pod %s (%s) is still there: %s", name, ip, line)
			}
		}
	}
}

// processesOf lists the processes that name the pod in their command line
// (the sidecar) or run in its folder (the model).
func processesOf(pod string) []string {
	var out []string
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		raw, err := os.ReadFile(d + "/cmdline")
		if err != nil {
			continue
		}
		cmd := strings.ReplaceAll(string(raw), "\x00", " ")
		cwd, _ := os.Readlink(d + "/cwd")
		if strings.Contains(cmd, pod) || strings.Contains(cwd, pod) {
			out = append(out, cmd)
		}
	}
	return out
}

func watchPods(t *testing.T, ctx context.Context, ns string) (watch.Interface, error) {
	cs, err := kubernetes.NewForConfig(testenv.Kube(t))
	if err != nil {
		return nil, err
	}
	return cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{TimeoutSeconds: ptr.To[int64](30)})
}
