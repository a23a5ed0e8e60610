package testenv

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
)

// ModelPort is the port of the Service ModelAtZero makes.
const ModelPort = 8080

// ModelAtZero returns the objects of a model that a test's own kubelet
// runs: a Deployment name at zero replicas, a Service name without a
// selector (the test writes its EndpointSlices) and a CustomAutoscaler name
// of spec, which it points at the Deployment and, when spec routes, at the
// Service.
func ModelAtZero(namespace, name string, spec v1alpha1.CustomAutoscalerSpec) []client.Object {
	labels := map[string]string{"app": name}
	spec.ScaleTargetRef = v1alpha1.ScaleTargetReference{APIVersion: "apps/v1", Kind: "Deployment", Name: name}
	if spec.Route != nil {
		route := *spec.Route
		route.Service, route.Port = name, ModelPort
		spec.Route = &route
	}
	return []client.Object{
		&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: ModelPort}}},
		},
		&appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptr.To[int32](0),
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "model", Image: "model:1"}}},
				},
			},
		},
		&v1alpha1.CustomAutoscaler{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}, Spec: spec},
	}
}
