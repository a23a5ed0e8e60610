package tests

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/extproc/holdmeta"
	"github.com/nemesis-ml/nemesis/internal/pki"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

// grpcClient dials serve's gRPC port as an Envoy would, with the client pair
// of environment ("" for none), trusting serve's CA.
func (s *stack) grpcClient(environment string) *grpc.ClientConn {
	s.t.Helper()
	caPEM, err := os.ReadFile(filepath.Join(s.tls.Dir, pki.ServeDir, pki.CAFile))
	if err != nil {
		s.t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	cfg := &tls.Config{RootCAs: roots, ServerName: pki.ServerName, MinVersion: tls.VersionTLS12}
	if environment != "" {
		dir := filepath.Join(s.tls.Dir, pki.EnvoyDir(environment))
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, pki.CertFile), filepath.Join(dir, pki.KeyFile))
		if err != nil {
			s.t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	conn, err := grpc.NewClient(s.xdsAddr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// subscribe asks for the clusters of cluster as node and returns the first
// answer's error (nil when configuration came).
func subscribe(ctx context.Context, conn *grpc.ClientConn, cluster string) error {
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	// A stream the server ended already fails Send with io.EOF; Recv
	// tells why.
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "intruder", Cluster: cluster}, TypeUrl: resource.ClusterType}); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	_, err = stream.Recv()
	return err
}

// sendLog streams one access-log entry for path as a node of cluster.
func sendLog(ctx context.Context, conn *grpc.ClientConn, cluster, path string) error {
	stream, err := accesslogv3.NewAccessLogServiceClient(conn).StreamAccessLogs(ctx)
	if err != nil {
		return err
	}
	err = stream.Send(&accesslogv3.StreamAccessLogsMessage{
		Identifier: &accesslogv3.StreamAccessLogsMessage_Identifier{Node: &corev3.Node{Id: "intruder", Cluster: cluster}, LogName: "nemesis"},
		LogEntries: &accesslogv3.StreamAccessLogsMessage_HttpLogs{HttpLogs: &accesslogv3.StreamAccessLogsMessage_HTTPAccessLogEntries{
			LogEntry: []*accesslogdatav3.HTTPAccessLogEntry{{
				CommonProperties: &accesslogdatav3.AccessLogCommon{StartTime: timestamppb.New(time.Now().AddDate(5, 0, 0))},
				Request:          &accesslogdatav3.HTTPRequestProperties{Authority: "forged", Path: path},
			}},
		}},
	})
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	_, err = stream.CloseAndRecv()
	return err
}

// hold asks the activator to hold one request of route in environment.
func hold(ctx context.Context, conn *grpc.ClientConn, environment, route string) error {
	ctx = metadata.AppendToOutgoingContext(ctx, holdmeta.Route, route, holdmeta.Environment, environment)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	stream, err := extprocv3.NewExternalProcessorClient(conn).Process(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{}}}); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	_, err = stream.Recv()
	return err
}

// A client of the gRPC port without a certificate, or with another
// environment's, may not subscribe, log or hold for this environment; a
// certified Envoy may not hold for a route its environment does not have.
// Nothing they sent is stored or acted on.
func TestGRPCPortServesOnlyTheEnvironmentOfTheCertificate(t *testing.T) {
	s := newStack(t, "--proxy-log-flush-interval", "200ms")
	s.publish("demo", "/models/demo", nil) // at zero: the activator holds its requests
	route := s.namespace + "/demo"
	ctx := t.Context()

	anonymous := s.grpcClient("")
	for name, err := range map[string]error{
		"subscribe": subscribe(ctx, anonymous, s.env),
		"log":       sendLog(ctx, anonymous, s.env, "/anonymous"),
		"hold":      hold(ctx, anonymous, s.env, route),
	} {
		if code := status.Code(err); code != codes.Unavailable {
			t.Errorf("%s without a certificate: %v, want the handshake refused (Unavailable)", name, err)
		}
	}
	other := s.grpcClient(otherEnvironment)
	for name, err := range map[string]error{
		"subscribe": subscribe(ctx, other, s.env),
		"log":       sendLog(ctx, other, s.env, "/other-environment"),
		"hold":      hold(ctx, other, s.env, route),
	} {
		if code := status.Code(err); code != codes.PermissionDenied || !strings.Contains(err.Error(), otherEnvironment) {
			t.Errorf("%s with environment %q's certificate: %v, want PermissionDenied naming it", name, otherEnvironment, err)
		}
	}
	mine := s.grpcClient(s.env)
	if err := hold(ctx, mine, s.env, "victims/model"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("hold for a route that is not published: %v, want PermissionDenied", err)
	}
	if err := subscribe(ctx, mine, s.env); err != nil {
		t.Errorf("subscribe with the environment's certificate: %v", err)
	}

	// Nothing was stored, woken or counted.
	time.Sleep(time.Second) // several flush intervals
	if n, _ := s.countLogs("true"); n != 0 {
		t.Errorf("proxy_logs holds %d rows sent by refused streams", n)
	}
	ca := &v1alpha1.CustomAutoscaler{}
	if err := s.kube.Get(ctx, client.ObjectKey{Namespace: s.namespace, Name: "demo"}, ca); err != nil {
		t.Fatal(err)
	}
	if at, ok := ca.Annotations[v1alpha1.AnnotationActivation]; ok {
		t.Errorf("a refused hold woke the model (activation requested at %s)", at)
	}
	_, metrics := s.request(http.MethodGet, "/metrics", "", readToken)
	if strings.Contains(metrics, "victims/model") {
		t.Error("a refused route left a Prometheus series")
	}
	log, err := os.ReadFile(s.serve.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "envoy refused") || !strings.Contains(string(log), "access logs refused") || !strings.Contains(string(log), "hold refused") {
		t.Errorf("serve's log does not name every refusal:\n%s", log)
	}
}

// An Envoy of the environment (with its certificate) that subscribes and
// never ACKs does not hold back the requests the activator holds for the
// others: it is left out of the wait once stalled, and shown as such.
func TestAnEnvoyThatNeverAcksDoesNotFailHeldRequests(t *testing.T) {
	s := newStack(t, "--activator-hold-timeout", "20s")
	host := testenv.NewHost(t)
	backends := startBackends(t, host, "a")
	s.publish("demo", "/models/demo", nil)
	envoy := s.startEnvoy()
	if err := subscribe(t.Context(), s.grpcClient(s.env), s.env); err != nil {
		t.Fatal(err)
	}
	s.waitConnected(2)
	// Connected is not configured: a request before the route arrives is
	// Envoy's own 404.
	s.waitActivatorOnRoute(envoy, s.namespace+"/demo", true)

	type answer struct {
		code int
		body string
		err  error
	}
	answered := make(chan answer, 1)
	go func() {
		code, body, err := get(&http.Client{Timeout: time.Minute}, fmt.Sprintf("http://127.0.0.1:%d/models/demo", s.envoyPort))
		answered <- answer{code, body, err}
	}()
	time.Sleep(time.Second) // held
	s.addSlice("demo", backends[0])
	if a := <-answered; a.err != nil || a.code != http.StatusOK || a.body != "a" {
		t.Fatalf("held request: %d %q %v, want the model's answer", a.code, a.body, a.err)
	}
	_, body := s.request(http.MethodGet, "/loadbalancer/status", "", readToken)
	if !strings.Contains(body, `"node": "intruder"`) || !strings.Contains(body, "unanswered_since") {
		t.Fatalf("status does not show the silent envoy as stalled: %s", body)
	}
}
