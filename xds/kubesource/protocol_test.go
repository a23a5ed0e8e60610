package kubesource

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/xds/ir"
)

// The protocol comes from the route when it names one, else from the
// Service port's appProtocol; hosts and headers pass through.
func TestRoutesProtocolHostsHeaders(t *testing.T) {
	svc := func(name string, appProtocol *string) corev1.Service {
		return corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: name},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, AppProtocol: appProtocol}}},
		}
	}
	ca := func(name, protocol string) v1alpha1.CustomAutoscaler {
		return v1alpha1.CustomAutoscaler{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: name},
			Spec: v1alpha1.CustomAutoscalerSpec{Route: &v1alpha1.Route{
				PathPrefix: "/", Service: name, Port: 80, Protocol: protocol,
				Hosts:   []string{name + ".example"},
				Headers: []v1alpha1.HeaderMatch{{Name: "x-model", Value: name}},
			}},
		}
	}
	objs := Objects{
		Services: []corev1.Service{
			svc("h2c", ptr.To("kubernetes.io/h2c")), svc("grpc", ptr.To("grpc")),
			svc("plain", nil), svc("forced", nil), svc("http", ptr.To("kubernetes.io/h2c")),
		},
		Autoscalers: []v1alpha1.CustomAutoscaler{
			ca("h2c", ""), ca("grpc", ""), ca("plain", ""), ca("forced", "h2c"), ca("http", "http1"),
		},
	}
	routes, problems := Routes(objs)
	if len(problems) != 0 {
		t.Fatalf("problems: %v", problems)
	}
	want := map[string]ir.Protocol{"ml/h2c": ir.H2C, "ml/grpc": ir.H2C, "ml/plain": "", "ml/forced": ir.H2C, "ml/http": ir.HTTP1}
	for _, r := range routes["default"] {
		if r.Protocol != want[r.Name] {
			t.Errorf("%s: protocol %q, want %q", r.Name, r.Protocol, want[r.Name])
		}
		name := r.Name[len("ml/"):]
		if len(r.Hosts) != 1 || r.Hosts[0] != name+".example" || len(r.Headers) != 1 || r.Headers[0] != (ir.HeaderMatch{Name: "x-model", Value: name}) {
			t.Errorf("%s: hosts %v headers %v", r.Name, r.Hosts, r.Headers)
		}
	}
	if len(routes["default"]) != len(want) {
		t.Errorf("%d routes, want %d", len(routes["default"]), len(want))
	}
}
