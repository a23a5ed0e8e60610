package servers

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestSidecarGroupsListRunningSidecarsOnTheirAdminPort(t *testing.T) {
	pod := func(name, ip string, phase corev1.PodPhase, containers ...corev1.Container) corev1.Pod {
		return corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: name},
			Spec:       corev1.PodSpec{Containers: containers},
			Status:     corev1.PodStatus{PodIP: ip, Phase: phase},
		}
	}
	model := corev1.Container{Name: "model", Ports: []corev1.ContainerPort{{Name: "admin", ContainerPort: 8080}}}
	sidecar := corev1.Container{Name: "nemesis-sidecar", Ports: []corev1.ContainerPort{
		{Name: "http", ContainerPort: 8012}, {Name: "admin", ContainerPort: 9091}}}
	got := sidecarGroups([]corev1.Pod{
		pod("a", "10.213.0.1", corev1.PodRunning, model, sidecar),
		pod("no-sidecar", "10.213.0.2", corev1.PodRunning, model),
		pod("pending", "", corev1.PodPending, model, sidecar),
		pod("done", "10.213.0.3", corev1.PodSucceeded, model, sidecar),
	})
	want := []targetGroup{{Targets: []string{"10.213.0.1:9091"}, Labels: map[string]string{"namespace": "demo", "pod": "a"}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}
