// Package translate turns one environment's model into Envoy resources. It is
// pure: no I/O, the same input gives the same output.
package translate

import (
	"fmt"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/nemesis-ml/nemesis/xds/ir"
)

// Names of the resources every environment has.
const (
	ListenerName    = "ingress"
	RouteConfigName = "ingress"
)

// Options are the parts of the configuration that come from how Nemesis is
// deployed rather than from the environment.
type Options struct {
	// ListenerAddress and ListenerPort are where Envoy takes client traffic.
	ListenerAddress string `json:"listenerAddress"`
	ListenerPort    uint32 `json:"listenerPort"`
	// HoldTimeout is how long the activator holds a request of a route at
	// zero whose CustomAutoscaler does not say; DefaultHoldTimeout when 0.
	HoldTimeout time.Duration `json:"holdTimeout,omitempty"`
	// AccessLogCluster is the bootstrap cluster of the gRPC access-log
	// service that Envoy streams every request to; "" logs nothing.
	AccessLogCluster string `json:"accessLogCluster,omitempty"`
	// AccessLogPath, when set, has Envoy write every request to this file
	// as a text record (internal/accesslogfile) instead, for the log shipper
	// in its pod to stream to serve: Envoy's file logger costs it less
	// than its gRPC logger.
	AccessLogPath string `json:"accessLogPath,omitempty"`
	// TrustedHops is how many proxies in front of Envoy append to
	// X-Forwarded-For; the client's address is the one they name. 0: the
	// connection's peer is the client.
	TrustedHops uint32 `json:"trustedHops,omitempty"`
}

// Resources are an environment's Envoy resources by type URL.
type Resources map[resource.Type][]types.Resource

// Translate returns the listener, route configuration, clusters and
// endpoints of env, which must be normalized and valid (ir.Environment's
// Normalize and Validate) once settings.WithDefaults has filled what it
// fills.
func Translate(env ir.Environment, opts Options) (Resources, error) {
	env.Settings = env.Settings.WithDefaults()
	if err := env.Validate(); err != nil {
		return nil, fmt.Errorf("invalid environment %q: %w", env.Name, err)
	}
	listener, err := buildListener(opts)
	if err != nil {
		return nil, fmt.Errorf("building listener: %w", err)
	}
	routes, err := buildRouteConfig(env, opts)
	if err != nil {
		return nil, fmt.Errorf("building routes: %w", err)
	}
	out := Resources{
		resource.ListenerType: {listener},
		resource.RouteType:    {routes},
		resource.ClusterType:  {},
		resource.EndpointType: {},
	}
	for _, r := range env.Routes {
		if r.NoService {
			continue // its route answers 503 (no cluster) until the Service is known
		}
		cluster, err := buildCluster(r, env.Settings)
		if err != nil {
			return nil, fmt.Errorf("building cluster %s: %w", r.Name, err)
		}
		out[resource.ClusterType] = append(out[resource.ClusterType], cluster)
		out[resource.EndpointType] = append(out[resource.EndpointType], buildLoadAssignment(r))
	}
	return out, nil
}
