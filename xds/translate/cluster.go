package translate

import (
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/nemesis-ml/nemesis/xds/settings"
)

var lbPolicies = map[settings.Policy]clusterv3.Cluster_LbPolicy{
	settings.RoundRobin:       clusterv3.Cluster_ROUND_ROBIN,
	settings.LeastConnections: clusterv3.Cluster_LEAST_REQUEST,
	settings.Random:           clusterv3.Cluster_RANDOM,
}

func buildCluster(name string, s settings.Settings) *clusterv3.Cluster {
	// One limit for connections, pending and active requests: with HTTP/1.1
	// upstreams each request needs a connection, so max_connections bounds
	// the load a model sees, and requests beyond it get 503 at once instead
	// of queueing without bound.
	limit := wrapperspb.UInt32(uint32(s.MaxConnections))
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsConfigSource()},
		ConnectTimeout:       durationpb.New(5 * time.Second),
		LbPolicy:             lbPolicies[s.Policy],
		CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			Priority:           corev3.RoutingPriority_DEFAULT,
			MaxConnections:     limit,
			MaxPendingRequests: limit,
			MaxRequests:        limit,
		}}},
	}
}
