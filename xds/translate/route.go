package translate

import (
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/nemesis-ml/nemesis/xds/ir"
)

func buildRouteConfig(env ir.Environment, opts Options) (*routev3.RouteConfiguration, error) {
	timeout := durationpb.New(time.Duration(env.Settings.TimeoutSeconds) * time.Second)
	routes := make([]*routev3.Route, 0, len(env.Routes))
	for _, r := range env.Routes {
		route := &routev3.Route{
			Name:  r.Name,
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: r.PathPrefix}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: r.Name},
				Timeout:          timeout,
			}},
		}
		if len(r.Endpoints) == 0 {
			// At zero: the activator holds the request until an endpoint is
			// ready. The stream's idle timeout (5 min by default) must not
			// cut a hold short.
			hold := HoldTimeout(r, opts)
			perFilter, err := extProcPerRoute(env.Name, r)
			if err != nil {
				return nil, err
			}
			route.TypedPerFilterConfig = perFilter
			route.GetRoute().IdleTimeout = durationpb.New(hold + holdGrace)
		}
		routes = append(routes, route)
	}
	return &routev3.RouteConfiguration{
		Name: RouteConfigName,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    "models",
			Domains: []string{"*"},
			Routes:  routes,
		}},
	}, nil
}
