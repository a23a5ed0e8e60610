package tests

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/nemesis-ml/nemesis/controller/podmetric"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

// A pod whose port refuses connections: Envoy never sends it a request, so
// the failures are the route's (counted on serve's /metrics), and the pod's
// samples from the logs show no requests and no errors.
func TestRequestsThatFailBeforeAPodAreTheRoutes(t *testing.T) {
	s := newStack(t)
	envoy := s.startEnvoy()
	s.publish("ghost", "/models/ghost", nil)
	// Nothing listens on the host's port 9: connections are refused.
	host := testenv.NewHost(t)
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "ghost-0", Namespace: s.namespace, Labels: map[string]string{discoveryv1.LabelServiceName: "ghost"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses: []string{host.Addr}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: s.namespace, Name: "ghost-0"},
		}},
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](9)}},
	}
	if err := s.kube.Create(t.Context(), slice); err != nil {
		t.Fatal(err)
	}
	route := s.namespace + "/ghost"
	s.waitActivatorOnRoute(envoy, route, false)

	const sent = 5
	for range sent {
		if code, _, err := get(http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/models/ghost", s.envoyPort)); err != nil || code != http.StatusServiceUnavailable {
			t.Fatalf("request to a pod that refuses connections: %d %v, want Envoy's 503", code, err)
		}
	}
	series := fmt.Sprintf(`nemesis_route_requests_failed_before_pod_total{route=%q}`, route)
	testenv.Eventually(t, 10*time.Second, "the failures counted on the route", func() error {
		if n := s.metric(series); n != sent {
			return fmt.Errorf("%s = %v, want %d", series, n, sent)
		}
		return nil
	})
	rdb := testenv.RedisClient(t, s.redis)
	samples := s.samples(rdb, "ghost-0")
	if len(samples) == 0 {
		t.Fatal("no samples of the pod: a pod of a route gets one every second while Envoy streams its logs")
	}
	for _, smp := range samples {
		if smp.Source != podmetric.SourceEnvoy || smp.RequestCount != 0 || smp.ErrorCount != 0 {
			t.Fatalf("pod sample %+v: the pod served nothing and failed nothing", smp)
		}
	}
}
