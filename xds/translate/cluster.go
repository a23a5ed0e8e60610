package translate

import (
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/nemesis-ml/nemesis/xds/ir"
	"github.com/nemesis-ml/nemesis/xds/settings"
)

var lbPolicies = map[settings.Policy]clusterv3.Cluster_LbPolicy{
	settings.RoundRobin:       clusterv3.Cluster_ROUND_ROBIN,
	settings.LeastConnections: clusterv3.Cluster_LEAST_REQUEST,
	settings.Random:           clusterv3.Cluster_RANDOM,
}

// httpProtocolOptions is the key of a cluster's upstream HTTP options.
const httpProtocolOptions = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// edsFetchTimeout bounds how long a cluster warms waiting for its
// endpoints. Envoy holds back cluster requests while a cluster warms, and
// go-control-plane's ADS mode withholds endpoints from a request that does
// not name every cluster: a cluster changed twice within milliseconds warms
// until new endpoints come, and a cluster added meanwhile cannot reach
// Envoy (tests/warming_test.go). Envoy's default is 15 s. Once it passes,
// Envoy asks for clusters again, and then for every cluster's endpoints.
const edsFetchTimeout = 2 * time.Second

// minRetryConcurrency lets a model with few requests in flight still have
// a few retries when the budget's share of them rounds to nothing.
const minRetryConcurrency = 3

func edsConfigSource() *corev3.ConfigSource {
	c := adsConfigSource()
	c.InitialFetchTimeout = durationpb.New(edsFetchTimeout)
	return c
}

func buildCluster(r ir.Route, s settings.Settings) (*clusterv3.Cluster, error) {
	// One limit for connections, pending and active requests: with HTTP/1.1
	// upstreams each request needs a connection, so max_connections bounds
	// the load a model sees, and requests beyond it get 503 at once instead
	// of queueing without bound. Over HTTP/2 requests share connections and
	// max_requests is the bound.
	limit := wrapperspb.UInt32(uint32(s.MaxConnections))
	c := &clusterv3.Cluster{
		Name:                 r.Name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: edsConfigSource()},
		ConnectTimeout:       durationpb.New(5 * time.Second),
		LbPolicy:             lbPolicies[s.Policy],
		CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			Priority:           corev3.RoutingPriority_DEFAULT,
			MaxConnections:     limit,
			MaxPendingRequests: limit,
			MaxRequests:        limit,
			RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
				BudgetPercent:       &typev3.Percent{Value: float64(s.RetryBudgetPercent)},
				MinRetryConcurrency: wrapperspb.UInt32(minRetryConcurrency),
			},
		}}},
	}
	if r.Protocol == ir.H2C {
		opts, err := anypb.New(&httpv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
				},
			}},
		})
		if err != nil {
			return nil, err
		}
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptions: opts}
	}
	return c, nil
}
