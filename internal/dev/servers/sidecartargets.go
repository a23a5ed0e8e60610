package servers

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// SidecarTargets keeps a Prometheus file_sd file listing the sidecars of
// the API server's running Pods (the container nemesis-sidecar, its port
// named admin, on the pod's IP), rewriting it every interval until ctx
// ends. Debian's Prometheus has no Kubernetes service discovery: this
// stands in for it, with the namespace and pod labels it would add.
func SidecarTargets(ctx context.Context, kube *rest.Config, path string, every time.Duration) error {
	cs, err := kubernetes.NewForConfig(kube)
	if err != nil {
		return fmt.Errorf("creating kubernetes client for sidecar targets: %w", err)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	var last []byte
	for {
		pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err == nil {
			groups := sidecarGroups(pods.Items)
			raw, _ := json.Marshal(groups)
			if string(raw) != string(last) {
				if err := writeAtomically(path, raw); err != nil {
					return err
				}
				last = raw
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// targetGroup is one entry of a file_sd file.
type targetGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

func sidecarGroups(pods []corev1.Pod) []targetGroup {
	groups := []targetGroup{}
	for _, p := range pods {
		if p.Status.PodIP == "" || p.Status.Phase != corev1.PodRunning {
			continue
		}
		for _, c := range p.Spec.Containers {
			i := slices.IndexFunc(c.Ports, func(port corev1.ContainerPort) bool { return port.Name == "admin" })
			if c.Name != "nemesis-sidecar" || i < 0 {
				continue
			}
			groups = append(groups, targetGroup{
				Targets: []string{net.JoinHostPort(p.Status.PodIP, strconv.Itoa(int(c.Ports[i].ContainerPort)))},
				Labels:  map[string]string{"namespace": p.Namespace, "pod": p.Name},
			})
		}
	}
	return groups
}

// writeAtomically replaces path with data, so that a reader never sees half
// a file.
func writeAtomically(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".targets-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
