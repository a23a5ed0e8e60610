package tests

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
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
	// Nothing listens on the pod's port: connections are refused.
	s.publishGhost(t)
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

// publishGhost publishes route /models/ghost to one pod, ghost-0, at port
// 9 of a host of its own where nothing listens, and returns the host.
func (s *stack) publishGhost(t *testing.T) *testenv.Host {
	t.Helper()
	s.publish("ghost", "/models/ghost", nil)
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
	return host
}

// An Envoy of another environment may log for its own environment, but
// entries naming this environment's pod move none of that pod's samples:
// a pod's traffic comes only from the Envoys of its route's environment.
func TestAnotherEnvironmentsLogsDoNotReachAPod(t *testing.T) {
	s := newStack(t)
	envoy := s.startEnvoy()
	host := s.publishGhost(t)
	s.waitActivatorOnRoute(envoy, s.namespace+"/ghost", false)
	rdb := testenv.RedisClient(t, s.redis)
	testenv.Eventually(t, 10*time.Second, "idle samples of the pod", func() error {
		if n := len(s.samples(rdb, "ghost-0")); n == 0 {
			return fmt.Errorf("no samples")
		}
		return nil
	})
	before := s.metric("nemesis_pod_traffic_unknown_upstream_total")

	const forged = 50
	entries := make([]*accesslogdatav3.HTTPAccessLogEntry, forged)
	for i := range entries {
		entries[i] = &accesslogdatav3.HTTPAccessLogEntry{
			CommonProperties: &accesslogdatav3.AccessLogCommon{
				StartTime: timestamppb.Now(), RouteName: s.namespace + "/ghost",
				UpstreamRemoteAddress: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: host.Addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 9},
				}}},
				TimeToFirstUpstreamTxByte: durationpb.New(time.Millisecond),
				TimeToFirstUpstreamRxByte: durationpb.New(5 * time.Second),
				TimeToLastUpstreamRxByte:  durationpb.New(5 * time.Second),
			},
			Response: &accesslogdatav3.HTTPResponseProperties{ResponseCode: wrapperspb.UInt32(200)},
		}
	}
	conn := s.grpcClient(otherEnvironment)
	stream, err := accesslogv3.NewAccessLogServiceClient(conn).StreamAccessLogs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&accesslogv3.StreamAccessLogsMessage{
		Identifier: &accesslogv3.StreamAccessLogsMessage_Identifier{Node: &corev3.Node{Id: "intruder", Cluster: otherEnvironment}, LogName: "nemesis"},
		LogEntries: &accesslogv3.StreamAccessLogsMessage_HttpLogs{HttpLogs: &accesslogv3.StreamAccessLogsMessage_HTTPAccessLogEntries{LogEntry: entries}},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		t.Fatalf("another environment's Envoy logging for itself: %v", err)
	}
	testenv.Eventually(t, 10*time.Second, "the forged entries counted as no pod's", func() error {
		if n := s.metric("nemesis_pod_traffic_unknown_upstream_total") - before; n != forged {
			return fmt.Errorf("%v unknown upstreams, want %d", n, forged)
		}
		return nil
	})
	for _, smp := range s.samples(rdb, "ghost-0") {
		if smp.RequestCount != 0 {
			t.Fatalf("the pod's sample %+v counts the other environment's entries", smp)
		}
	}
}
