package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/nemesis-ml/nemesis/xds/translate"
)

// envoy is an ADS client that subscribes to clusters and, when acks is
// true, ACKs every response as Envoy does.
func envoy(t *testing.T, ctx context.Context, addr, node string, acks bool) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: node, Cluster: "prod"}, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil || !acks {
				return
			}
			if stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resp.GetTypeUrl(), VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}) != nil {
				return
			}
		}
	}()
}

func TestAnEnvoyThatNeverAcksDoesNotBlockTheOthers(t *testing.T) {
	old := StallAfter
	StallAfter = 300 * time.Millisecond
	t.Cleanup(func() { StallAfter = old })
	srv := New(slog.New(slog.DiscardHandler), func(string) {})
	empty := translate.Resources{resource.ClusterType: []types.Resource{}}
	if err := srv.SetSnapshot(t.Context(), "prod", "1", empty); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { _ = srv.Serve(ctx, l) }()
	envoy(t, ctx, l.Addr().String(), "good", true)
	envoy(t, ctx, l.Addr().String(), "silent", false)

	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if st := srv.Status(); len(st) == 2 && st[0].Node != "" && st[1].Node != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("envoys not connected: %+v", srv.Status())
		}
	}
	reached := func(v string) bool { return v == "1" }
	// While the silent one is within StallAfter, it is waited for.
	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancelShort()
	if _, err := srv.WaitAcked(short, "prod", reached); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("within StallAfter: %v, want to wait for the silent envoy", err)
	}
	// Then it is left out, and reported.
	wait, cancelWait := context.WithTimeout(ctx, 5*time.Second)
	defer cancelWait()
	acked, err := srv.WaitAcked(wait, "prod", reached)
	if err != nil || len(acked) != 1 || acked[0].Node != "good" {
		t.Fatalf("acked %+v, %v: want the good envoy only", acked, err)
	}
	for _, st := range srv.Status() {
		if stalled := st.UnansweredSince != nil; stalled != (st.Node == "silent") {
			t.Errorf("%s: unanswered since %v", st.Node, st.UnansweredSince)
		}
	}
}
