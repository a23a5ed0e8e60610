package logsink

import (
	"net/netip"
	"time"
)

// Row is one proxied request as stored in proxy_logs.
type Row struct {
	Timestamp     time.Time  `json:"timestamp"` // request start, UTC
	ClientIP      netip.Addr `json:"client_ip"`
	TargetURL     string     `json:"target_url"`
	Method        string     `json:"http_method"`
	Status        int32      `json:"response_status"` // 0 when Envoy sent no response
	LatencyMS     *int32     `json:"latency_ms"`
	Environment   string     `json:"environment"`
	Route         string     `json:"route"`
	UpstreamHost  string     `json:"upstream_host"`
	ResponseFlags string     `json:"response_flags"`
	RequestID     string     `json:"request_id"`
	BytesReceived int64      `json:"bytes_received"`
	BytesSent     int64      `json:"bytes_sent"`
}

// Columns are the proxy_logs columns a Row fills, in Values order.
var Columns = []string{
	"timestamp", "client_ip", "target_url", "http_method", "response_status", "latency_ms",
	"environment", "route", "upstream_host", "response_flags", "request_id", "bytes_received", "bytes_sent",
}

// Values returns the row's values in Columns order.
func (r *Row) Values() []any {
	var latency any
	if r.LatencyMS != nil {
		latency = *r.LatencyMS
	}
	return []any{
		r.Timestamp.UTC(), r.ClientIP, r.TargetURL, r.Method, r.Status, latency,
		r.Environment, r.Route, r.UpstreamHost, r.ResponseFlags, r.RequestID, r.BytesReceived, r.BytesSent,
	}
}
