package translate

import (
	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	earlyheadermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/early_header_mutation/header_mutation/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// clientHeaderPrefix is what client-sent headers Envoy acts on start with:
// x-envoy-upstream-rq-timeout-ms overrides the route's timeout,
// x-envoy-retry-on and x-envoy-max-retries add retries. None comes from a
// client of Nemesis's edge.
const clientHeaderPrefix = "x-envoy-"

// edgeHygiene makes the listener an edge proxy: the client's address is the
// connection's peer (or the one xff_num_trusted_hops proxies in front say),
// never what the client wrote in X-Forwarded-For, and every x-envoy-*
// header a client sent is removed before routing, whatever address it came
// from (Envoy otherwise trusts them from private and loopback addresses).
func edgeHygiene(hcm *hcmv3.HttpConnectionManager, opts Options) error {
	strip, err := anypb.New(&earlyheadermutationv3.HeaderMutation{Mutations: []*mutationrulesv3.HeaderMutation{{
		Action: &mutationrulesv3.HeaderMutation_RemoveOnMatch_{RemoveOnMatch: &mutationrulesv3.HeaderMutation_RemoveOnMatch{
			KeyMatcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: clientHeaderPrefix}},
		}},
	}}})
	if err != nil {
		return err
	}
	hcm.UseRemoteAddress = wrapperspb.Bool(true)
	hcm.XffNumTrustedHops = opts.TrustedHops
	hcm.EarlyHeaderMutationExtensions = []*corev3.TypedExtensionConfig{{
		Name: "strip-client-envoy-headers", TypedConfig: strip,
	}}
	return nil
}
