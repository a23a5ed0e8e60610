package translate

import (
	"slices"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/nemesis-ml/nemesis/xds/ir"
)

// anyHost is the virtual host of the routes that name no host.
const anyHost = "models"

// buildRouteConfig puts each route in the virtual host of each of its
// hosts, and the routes without hosts in every virtual host after the
// host's own (a host name is more specific than any path, as in Gateway
// API), so a request for a named host still reaches the models that answer
// any host.
func buildRouteConfig(env ir.Environment, opts Options) (*routev3.RouteConfiguration, error) {
	var hosts []string
	byHost := map[string][]*routev3.Route{}
	var anyRoutes []*routev3.Route
	for _, r := range env.Routes {
		route, err := buildRoute(env, r, opts)
		if err != nil {
			return nil, err
		}
		if len(r.Hosts) == 0 {
			anyRoutes = append(anyRoutes, route)
			continue
		}
		for _, h := range r.Hosts {
			if _, ok := byHost[h]; !ok {
				hosts = append(hosts, h)
			}
			byHost[h] = append(byHost[h], route)
		}
	}
	slices.Sort(hosts)
	vhosts := make([]*routev3.VirtualHost, 0, len(hosts)+1)
	for _, h := range hosts {
		vhosts = append(vhosts, &routev3.VirtualHost{
			Name: "host:" + h,
			// A Host or :authority with a port matches too.
			Domains: []string{h, h + ":*"},
			Routes:  append(byHost[h], anyRoutes...),
		})
	}
	vhosts = append(vhosts, &routev3.VirtualHost{Name: anyHost, Domains: []string{"*"}, Routes: anyRoutes})
	return &routev3.RouteConfiguration{Name: RouteConfigName, VirtualHosts: vhosts}, nil
}

func buildRoute(env ir.Environment, r ir.Route, opts Options) (*routev3.Route, error) {
	s := env.Settings
	match := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: r.PathPrefix}}
	for _, h := range r.Headers {
		match.Headers = append(match.Headers, exactHeader(h.Name, h.Value))
	}
	action := &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: r.Name},
		Timeout:          durationpb.New(time.Duration(s.TimeoutSeconds) * time.Second),
		// The longest silence of a request or its answer (a token
		// stream's gap between tokens), in place of the listener's 5 min.
		IdleTimeout: durationpb.New(time.Duration(s.StreamIdleTimeoutSeconds) * time.Second),
		// WebSockets pass through as a stream of bytes.
		UpgradeConfigs: []*routev3.RouteAction_UpgradeConfig{{UpgradeType: "websocket", Enabled: wrapperspb.Bool(true)}},
	}
	if s.RetryAttempts > 0 {
		retry, err := buildRetryPolicy(s.RetryAttempts)
		if err != nil {
			return nil, err
		}
		action.RetryPolicy = retry
	}
	route := &routev3.Route{Name: r.Name, Match: match, Action: &routev3.Route_Route{Route: action}}
	if len(r.Endpoints) == 0 {
		// At zero: the activator holds the request until an endpoint is
		// ready. The stream's idle timeout must not cut a hold short.
		hold := HoldTimeout(r, opts)
		perFilter, err := extProcPerRoute(env.Name, r)
		if err != nil {
			return nil, err
		}
		route.TypedPerFilterConfig = perFilter
		action.IdleTimeout = durationpb.New(max(hold+holdGrace, time.Duration(s.StreamIdleTimeoutSeconds)*time.Second))
	}
	return route, nil
}

func exactHeader(name, value string) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{
		Name: name,
		HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Exact{Exact: value},
		}},
	}
}
