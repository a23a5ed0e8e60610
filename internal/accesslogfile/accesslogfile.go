// Package accesslogfile is the record Envoy's file access logger writes
// when Nemesis logs through a file, and its translation back into the gRPC
// access-log entry serve reads. xds/translate configures the format; the
// log shipper in Envoy's pod parses the records.
//
// A record is Envoy's text format, not its JSON format: the JSON formatter
// cost Envoy 0.7 µs more a request (bench/proxylogs), a tenth of what file
// logging costs it in all. Text needs no escaping here because nothing a
// client sends can hold a newline (Envoy's codecs refuse CR, LF and NUL in
// header values and paths): the first line holds the fields Envoy makes
// (times, sizes, addresses, names Nemesis gives), each field a client
// chooses has a line of its own after a one-letter tag, and an empty line
// ends the record:
//
//	1796574929.229087 127.0.0.1 http 500 - 302 1 138 1 100358 9 100344 100355 10.1.0.7:8080 ns/demo ns/demo
//	m DELETE
//	a models.example.com
//	p /models/demo/item/939/500
//	r 97e4dea5-1b4e-413f-9a7d-1f4cec5a5684
//
// A value Envoy does not have is "-".
package accesslogfile

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Format is Envoy's text format of a record. The times of the exchange are
// microseconds from the request's start, as the gRPC entry gives them.
const Format = "%START_TIME(%s.%6f)% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %REQ(:SCHEME)% " +
	"%RESPONSE_CODE% %RESPONSE_FLAGS% " +
	"%REQUEST_HEADERS_BYTES% %BYTES_RECEIVED% %RESPONSE_HEADERS_BYTES% %BYTES_SENT% " +
	"%COMMON_DURATION(DS_RX_BEG:DS_TX_END:us)% %COMMON_DURATION(DS_RX_BEG:US_TX_BEG:us)% " +
	"%COMMON_DURATION(DS_RX_BEG:US_RX_BEG:us)% %COMMON_DURATION(DS_RX_BEG:US_RX_END:us)% " +
	"%UPSTREAM_HOST% %ROUTE_NAME% %UPSTREAM_CLUSTER%\n" +
	"m %REQ(:METHOD)%\n" +
	"a %REQ(:AUTHORITY)%\n" +
	"p %REQ(:PATH)%\n" +
	"r %REQ(X-REQUEST-ID)%\n" +
	"\n"

// The fields of the first line, in Format's order.
const (
	fStart = iota
	fClient
	fScheme
	fCode
	fFlags
	fRequestHeaders
	fReceived
	fResponseHeaders
	fSent
	fDuration
	fUpstreamTxBeg
	fUpstreamRxBeg
	fUpstreamRxEnd
	fUpstream
	fRoute
	fCluster
	nFields
)

// tags are the lines after the first, in Format's order.
var tags = [...]byte{'m', 'a', 'p', 'r'}

// Parse turns one record (its lines, the empty one that ends it optional)
// into the gRPC access-log entry Envoy would have sent for the request;
// bytes that are not UTF-8 become U+FFFD.
func Parse(record []byte) (*accesslogdatav3.HTTPAccessLogEntry, error) {
	if !utf8.Valid(record) {
		// Envoy passes bytes a protobuf string cannot hold.
		record = bytes.ToValidUTF8(record, []byte("\uFFFD"))
	}
	lines := bytes.Split(bytes.TrimSuffix(bytes.TrimSuffix(record, []byte("\n")), []byte("\n")), []byte("\n"))
	if len(lines) != 1+len(tags) {
		return nil, fmt.Errorf("access-log record of %d lines, want %d", len(lines), 1+len(tags))
	}
	var tagged [len(tags)]string
	for i, t := range tags {
		l := lines[1+i]
		if len(l) < 2 || l[0] != t || l[1] != ' ' {
			return nil, fmt.Errorf("access-log record: line %d does not start with %q", 2+i, string(t)+" ")
		}
		tagged[i] = value(string(l[2:]))
	}
	f := strings.Split(string(lines[0]), " ")
	if len(f) != nFields {
		return nil, fmt.Errorf("access-log record: %d fields on the first line, want %d", len(f), nFields)
	}
	for i := range f {
		f[i] = value(f[i])
	}
	start, err := parseStart(f[fStart])
	if err != nil {
		return nil, err
	}
	var n [nFields]count
	for _, i := range []int{fCode, fRequestHeaders, fReceived, fResponseHeaders, fSent, fDuration, fUpstreamTxBeg, fUpstreamRxBeg, fUpstreamRxEnd} {
		if n[i], err = parseCount(f[i]); err != nil {
			return nil, err
		}
	}
	common := &accesslogdatav3.AccessLogCommon{
		StartTime:                 start,
		DownstreamRemoteAddress:   socket(f[fClient], 0),
		RouteName:                 f[fRoute],
		UpstreamCluster:           f[fCluster],
		ResponseFlags:             parseFlags(f[fFlags]),
		Duration:                  n[fDuration].micros(),
		TimeToFirstUpstreamTxByte: n[fUpstreamTxBeg].micros(),
		TimeToFirstUpstreamRxByte: n[fUpstreamRxBeg].micros(),
		TimeToLastUpstreamRxByte:  n[fUpstreamRxEnd].micros(),
	}
	if u := f[fUpstream]; u != "" {
		host, port, err := net.SplitHostPort(u)
		if err != nil {
			return nil, fmt.Errorf("upstream %q: %w", u, err)
		}
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("upstream %q: port: %w", u, err)
		}
		common.UpstreamRemoteAddress = socket(host, uint32(p))
	}
	e := &accesslogdatav3.HTTPAccessLogEntry{
		CommonProperties: common,
		Request: &accesslogdatav3.HTTPRequestProperties{
			RequestMethod:       corev3.RequestMethod(corev3.RequestMethod_value[tagged[0]]),
			Scheme:              f[fScheme],
			Authority:           tagged[1],
			Path:                tagged[2],
			RequestId:           tagged[3],
			RequestHeadersBytes: n[fRequestHeaders].n,
			RequestBodyBytes:    n[fReceived].n,
		},
		Response: &accesslogdatav3.HTTPResponseProperties{
			ResponseHeadersBytes: n[fResponseHeaders].n,
			ResponseBodyBytes:    n[fSent].n,
		},
	}
	if c := n[fCode]; c.set && c.n > 0 {
		e.Response.ResponseCode = wrapperspb.UInt32(uint32(min(c.n, 1<<32-1)))
	}
	return e, nil
}

// value is a field as written, "" for Envoy's "-" (no value).
func value(s string) string {
	if s == "-" {
		return ""
	}
	return s
}

// count is a number Envoy may leave out: set says whether it had one.
type count struct {
	n   uint64
	set bool
}

func parseCount(s string) (count, error) {
	if s == "" {
		return count{}, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return count{}, fmt.Errorf("access-log record: %q is not a count", s)
	}
	return count{n, true}, nil
}

func (c count) micros() *durationpb.Duration {
	if !c.set {
		return nil
	}
	return durationpb.New(time.Duration(min(c.n, uint64(1<<63-1)/1000)) * time.Microsecond)
}

// parseStart reads %START_TIME(%s.%6f)%: seconds, a dot, microseconds.
func parseStart(s string) (*timestamppb.Timestamp, error) {
	secs, frac, _ := strings.Cut(s, ".")
	sec, err := strconv.ParseInt(secs, 10, 64)
	if err != nil || len(frac) > 9 {
		return nil, fmt.Errorf("access-log record: start %q is not seconds.micros", s)
	}
	var nanos int64
	if frac != "" {
		if nanos, err = strconv.ParseInt(frac+strings.Repeat("0", 9-len(frac)), 10, 32); err != nil || nanos < 0 {
			return nil, fmt.Errorf("access-log record: start %q is not seconds.micros", s)
		}
	}
	return &timestamppb.Timestamp{Seconds: sec, Nanos: int32(nanos)}, nil
}

func socket(host string, port uint32) *corev3.Address {
	if host == "" {
		return nil
	}
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// flagFields are Envoy's %RESPONSE_FLAGS% short codes and the fields of
// ResponseFlags they set.
var flagFields = map[string]protoreflect.Name{
	"LH": "failed_local_healthcheck", "UH": "no_healthy_upstream", "UT": "upstream_request_timeout",
	"LR": "local_reset", "UR": "upstream_remote_reset", "UF": "upstream_connection_failure",
	"UC": "upstream_connection_termination", "UO": "upstream_overflow", "NR": "no_route_found",
	"DI": "delay_injected", "FI": "fault_injected", "RL": "rate_limited",
	"RLSE": "rate_limit_service_error", "DC": "downstream_connection_termination",
	"URX": "upstream_retry_limit_exceeded", "SI": "stream_idle_timeout", "IH": "invalid_envoy_request_headers",
	"DPE": "downstream_protocol_error", "UMSDR": "upstream_max_stream_duration_reached",
	"RFCF": "response_from_cache_filter", "NFCF": "no_filter_config_found", "DT": "duration_timeout",
	"UPE": "upstream_protocol_error", "NC": "no_cluster_found", "OM": "overload_manager",
	"DF": "dns_resolution_failure", "DR": "downstream_remote_reset",
}

// parseFlags reads %RESPONSE_FLAGS%: short codes, comma-separated. A code
// this version does not know is skipped, as a newer Envoy may add some.
func parseFlags(s string) *accesslogdatav3.ResponseFlags {
	if s == "" {
		return nil
	}
	f := &accesslogdatav3.ResponseFlags{}
	m := f.ProtoReflect()
	for code := range strings.SplitSeq(s, ",") {
		if code == "UAEX" {
			f.UnauthorizedDetails = &accesslogdatav3.ResponseFlags_Unauthorized{}
			continue
		}
		if name, ok := flagFields[code]; ok {
			m.Set(m.Descriptor().Fields().ByName(name), protoreflect.ValueOfBool(true))
		}
	}
	return f
}
