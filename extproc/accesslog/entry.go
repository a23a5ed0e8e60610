// Package accesslog serves Envoy's gRPC access-log service
// (envoy.service.accesslog.v3) and turns each HTTP entry into a proxy_logs
// row.
package accesslog

import (
	"cmp"
	"net"
	"net/netip"
	"strconv"
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
func Row(environment string, e *accesslogdatav3.HTTPAccessLogEntry) logsink.Row {
	c, req, resp := e.GetCommonProperties(), e.GetRequest(), e.GetResponse()
	upstream := socketAddress(c.GetUpstreamRemoteAddress())
	host := upstream
	if host == "" {
		// Nobody upstream answered (no route, no healthy host): the URL
		// names what the client asked for instead.
		host = req.GetAuthority()
	}
	row := logsink.Row{
		Timestamp:     c.GetStartTime().AsTime().UTC(),
		ClientIP:      clientIP(c),
		TargetURL:     cmp.Or(req.GetScheme(), "http") + "://" + host + req.GetPath(),
		Method:        req.GetRequestMethod().String(),
		Status:        int32(resp.GetResponseCode().GetValue()),
		Environment:   environment,
		Route:         cmp.Or(c.GetRouteName(), c.GetUpstreamCluster()),
		UpstreamHost:  upstream,
		ResponseFlags: ResponseFlags(c.GetResponseFlags()),
		RequestID:     req.GetRequestId(),
		BytesReceived: int64(req.GetRequestHeadersBytes() + req.GetRequestBodyBytes()),
		BytesSent:     int64(resp.GetResponseHeadersBytes() + resp.GetResponseBodyBytes()),
	}
	if req.GetRequestMethod() == corev3.RequestMethod_METHOD_UNSPECIFIED {
		row.Method = ""
	}
	duration := c.GetDuration()
	if duration == nil {
		duration = c.GetTimeToLastDownstreamTxByte()
	}
	if duration != nil {
		ms := int32(min(duration.AsDuration().Milliseconds(), 1<<31-1))
		row.LatencyMS = &ms
	}
	return row
}

// PodRequest is what entry e, of route, says of the pod that served it. A
// request Envoy never sent to a pod (no route, no healthy host, a failed
// connection) names no upstream: it failed before any pod.
func PodRequest(route string, e *accesslogdatav3.HTTPAccessLogEntry) podtraffic.Request {
	c := e.GetCommonProperties()
	sent := c.GetTimeToFirstUpstreamTxByte()
	upstream := socketAddress(c.GetUpstreamRemoteAddress())
	if upstream == "" || sent == nil {
		return podtraffic.Request{Route: route}
	}
	end := c.GetTimeToLastUpstreamRxByte()
	if end == nil {
		// Reset by the pod before it answered: timed to the end of the
		// request, and a failure of the pod.
		end = cmp.Or(c.GetDuration(), c.GetTimeToLastDownstreamTxByte())
	}
	return podtraffic.Request{
		Route:    route,
		Upstream: upstream,
		Duration: max(end.AsDuration()-sent.AsDuration(), 0),
		Failed:   c.GetTimeToFirstUpstreamRxByte() == nil || e.GetResponse().GetResponseCode().GetValue() >= 500,
	}
}

// WithoutQuery is url without its query string (and fragment).
func WithoutQuery(url string) string {
	if i := strings.IndexAny(url, "?#"); i >= 0 {
		return url[:i]
	}
	return url
}

func clientIP(c *accesslogdatav3.AccessLogCommon) netip.Addr {
	for _, a := range []*corev3.Address{c.GetDownstreamRemoteAddress(), c.GetDownstreamDirectRemoteAddress()} {
		if ip, err := netip.ParseAddr(a.GetSocketAddress().GetAddress()); err == nil {
			return ip.Unmap()
		}
	}
	// A pipe or internal listener: no address, and the column needs one.
	return netip.IPv4Unspecified()
}

func socketAddress(a *corev3.Address) string {
	sa := a.GetSocketAddress()
	if sa == nil || sa.GetAddress() == "" {
		return ""
	}
	return net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10))
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
