package server

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"

	"github.com/nemesis-ml/nemesis/xds/translate"
)

// TestMetricsFollowACKsAndNACKs drives the server's stream callbacks as
// go-control-plane calls them: an Envoy that ACKs the current version, one
// that NACKs it, and one still on the previous version.
func TestMetricsFollowACKsAndNACKs(t *testing.T) {
	s := New(slog.New(slog.DiscardHandler), func(string) {})
	ctx := context.Background()
	if err := s.SetSnapshot(ctx, "prod", "1.1", translate.Resources{}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetSnapshot(ctx, "prod", "1.2", translate.Resources{}); err != nil {
		t.Fatal(err)
	}
	envoy := func(id int64, node string) {
		if err := s.onStreamOpen(ctx, id, ""); err != nil {
			t.Fatal(err)
		}
		req := &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: node, Cluster: "prod"}, TypeUrl: resourcev3.ClusterType}
		if err := s.onStreamRequest(id, req); err != nil {
			t.Fatal(err)
		}
	}
	respond := func(id int64, version, nonce string) {
		s.onStreamResponse(ctx, id, nil, &discoveryv3.DiscoveryResponse{VersionInfo: version, Nonce: nonce})
	}
	answer := func(id int64, version, nonce, nack string) {
		req := &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, VersionInfo: version, ResponseNonce: nonce}
		if nack != "" {
			req.ErrorDetail = &statuspb.Status{Message: nack}
		}
		if err := s.onStreamRequest(id, req); err != nil {
			t.Fatal(err)
		}
	}
	envoy(1, "acks")
	respond(1, "1.2", "a")
	answer(1, "1.2", "a", "")
	envoy(2, "nacks")
	respond(2, "1.2", "b")
	answer(2, "1.1", "b", "bad cluster")
	envoy(3, "behind")
	respond(3, "1.1", "c")
	answer(3, "1.1", "c", "")

	want := `
# HELP nemesis_xds_acks_total Responses Envoys accepted (one per resource type and version).
# TYPE nemesis_xds_acks_total counter
nemesis_xds_acks_total{environment="prod"} 2
# HELP nemesis_xds_connected_envoys Envoys connected to this server over ADS.
# TYPE nemesis_xds_connected_envoys gauge
nemesis_xds_connected_envoys{environment="prod"} 3
# HELP nemesis_xds_envoys_nacked Connected Envoys that rejected the environment's current configuration.
# TYPE nemesis_xds_envoys_nacked gauge
nemesis_xds_envoys_nacked{environment="prod"} 1
# HELP nemesis_xds_envoys_not_acked Connected Envoys that have not ACKed the environment's current configuration for every resource type.
# TYPE nemesis_xds_envoys_not_acked gauge
nemesis_xds_envoys_not_acked{environment="prod"} 2
# HELP nemesis_xds_nacks_total Responses Envoys rejected.
# TYPE nemesis_xds_nacks_total counter
nemesis_xds_nacks_total{environment="prod"} 1
# HELP nemesis_xds_snapshots_total Configurations published to an environment's Envoys.
# TYPE nemesis_xds_snapshots_total counter
nemesis_xds_snapshots_total{environment="prod"} 2
`
	if err := testutil.CollectAndCompare(s.Collector(), strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}

	// Gone Envoys leave the environment at 0 connected, not without a series.
	for id := range int64(3) {
		s.onStreamClosed(id+1, nil)
	}
	if err := testutil.CollectAndCompare(s.Collector(), strings.NewReader(`
# HELP nemesis_xds_connected_envoys Envoys connected to this server over ADS.
# TYPE nemesis_xds_connected_envoys gauge
nemesis_xds_connected_envoys{environment="prod"} 0
`), "nemesis_xds_connected_envoys"); err != nil {
		t.Fatal(err)
	}
}
