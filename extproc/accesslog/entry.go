// Package accesslog serves Envoy's gRPC access-log service
// (envoy.service.accesslog.v3) and turns each HTTP entry into a proxy_logs
// row.
package accesslog

import (
	"cmp"
	"net/netip"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"

	"github.com/nemesis-ml/nemesis/extproc/logsink"
	"github.com/nemesis-ml/nemesis/extproc/podtraffic"
)

// Environment names the Envoy fleet of a node: its cluster, or "default",
// as the xDS server names it.
func Environment(node *corev3.Node) string {
	return cmp.Or(node.GetCluster(), "default")
}

// Row turns one entry of an Envoy of environment into a proxy_logs row.
func Row(environment string, e *Entry) logsink.Row {
	host := e.Upstream
	if host == "" {
		// Nobody upstream answered (no route, no healthy host): the URL
		// names what the client asked for instead.
		host = e.Authority
	}
	row := logsink.Row{
		Timestamp:     e.Start,
		ClientIP:      e.ClientIP,
		TargetURL:     cmp.Or(e.Scheme, "http") + "://" + host + e.Path,
		Environment:   environment,
		Route:         cmp.Or(e.RouteName, e.UpstreamCluster),
		UpstreamHost:  e.Upstream,
		ResponseFlags: e.ResponseFlags,
		RequestID:     e.RequestID,
		Status:        int32(e.Status),
		BytesReceived: int64(e.BytesReceived),
		BytesSent:     int64(e.BytesSent),
	}
	if e.Method != corev3.RequestMethod_METHOD_UNSPECIFIED {
		row.Method = e.Method.String()
	}
	if d, ok := cmp.Or(e.Duration, e.LastDownstreamTx).get(); ok {
		ms := int32(min(d.Milliseconds(), 1<<31-1))
		row.LatencyMS = &ms
	}
	return row
}

// PodRequest is what entry e, of route, says of the pod that served it. A
// request Envoy never sent to a pod (no route, no healthy host, a failed
// connection) names no upstream: it failed before any pod.
func PodRequest(route string, e *Entry) podtraffic.Request {
	sent, ok := e.FirstUpstreamTx.get()
	if e.Upstream == "" || !ok {
		return podtraffic.Request{Route: route}
	}
	end, ok := e.LastUpstreamRx.get()
	if !ok {
		// Reset by the pod before it answered: timed to the end of the
		// request, and a failure of the pod.
		end, _ = cmp.Or(e.Duration, e.LastDownstreamTx).get()
	}
	_, answered := e.FirstUpstreamRx.get()
	return podtraffic.Request{
		Route:    route,
		Upstream: e.Upstream,
		Duration: max(end-sent, 0),
		Failed:   !answered || e.Status >= 500,
	}
}

// WithoutQuery is url without its query string (and fragment).
func WithoutQuery(url string) string {
	if i := strings.IndexAny(url, "?#"); i >= 0 {
		return url[:i]
	}
	return url
}

// clientIP is the first of the addresses that is an IP.
func clientIP(addresses ...string) netip.Addr {
	for _, a := range addresses {
		if ip, err := netip.ParseAddr(a); err == nil {
			return ip.Unmap()
		}
	}
	// A pipe or internal listener: no address, and the column needs one.
	return netip.IPv4Unspecified()
}

// ResponseFlags writes the set flags as Envoy's %RESPONSE_FLAGS% short
// codes, comma-separated, in Envoy's order; "" when none is set.
func ResponseFlags(f *accesslogdatav3.ResponseFlags) string {
	if f == nil {
		return ""
	}
	var out []string
	for _, flag := range []struct {
		set  bool
		code string
	}{
		{f.GetFailedLocalHealthcheck(), "LH"},
		{f.GetNoHealthyUpstream(), "UH"},
		{f.GetUpstreamRequestTimeout(), "UT"},
		{f.GetLocalReset(), "LR"},
		{f.GetUpstreamRemoteReset(), "UR"},
		{f.GetUpstreamConnectionFailure(), "UF"},
		{f.GetUpstreamConnectionTermination(), "UC"},
		{f.GetUpstreamOverflow(), "UO"},
		{f.GetNoRouteFound(), "NR"},
		{f.GetDelayInjected(), "DI"},
		{f.GetFaultInjected(), "FI"},
		{f.GetRateLimited(), "RL"},
		{f.GetUnauthorizedDetails() != nil, "UAEX"},
		{f.GetRateLimitServiceError(), "RLSE"},
		{f.GetDownstreamConnectionTermination(), "DC"},
		{f.GetUpstreamRetryLimitExceeded(), "URX"},
		{f.GetStreamIdleTimeout(), "SI"},
		{f.GetInvalidEnvoyRequestHeaders(), "IH"},
		{f.GetDownstreamProtocolError(), "DPE"},
		{f.GetUpstreamMaxStreamDurationReached(), "UMSDR"},
		{f.GetResponseFromCacheFilter(), "RFCF"},
		{f.GetNoFilterConfigFound(), "NFCF"},
		{f.GetDurationTimeout(), "DT"},
		{f.GetUpstreamProtocolError(), "UPE"},
		{f.GetNoClusterFound(), "NC"},
		{f.GetOverloadManager(), "OM"},
		{f.GetDnsResolutionFailure(), "DF"},
		{f.GetDownstreamRemoteReset(), "DR"},
	} {
		if flag.set {
			out = append(out, flag.code)
		}
	}
	return strings.Join(out, ",")
}
