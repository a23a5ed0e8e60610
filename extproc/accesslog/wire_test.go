package accesslog

import (
	"cmp"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/nemesis-ml/nemesis/extproc/logsink"
	"github.com/nemesis-ml/nemesis/extproc/podtraffic"
)

// decode sends e through the Decoder as Envoy would: one entry of a
// message.
func decode(t testing.TB, e *accesslogdatav3.HTTPAccessLogEntry) *Entry {
	t.Helper()
	raw, err := proto.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	_, entries, err := NewDecoder().Message(wrap(raw))
	if err != nil || len(entries) != 1 {
		t.Fatalf("decoding %v: %d entries, %v", e, len(entries), err)
	}
	return &entries[0]
}

// wrap makes the wire form of one entry the message's only HTTP entry.
func wrap(entry []byte) []byte {
	entries := protowire.AppendBytes(protowire.AppendTag(nil, entriesLogEntry, protowire.BytesType), entry)
	return protowire.AppendBytes(protowire.AppendTag(nil, msgHTTPLogs, protowire.BytesType), entries)
}

func TestFieldNumbers(t *testing.T) {
	for _, f := range []struct {
		msg  proto.Message
		name protoreflect.Name
		num  protowire.Number
	}{
		{&accesslogv3.StreamAccessLogsMessage{}, "identifier", msgIdentifier},
		{&accesslogv3.StreamAccessLogsMessage{}, "http_logs", msgHTTPLogs},
		{&accesslogv3.StreamAccessLogsMessage{}, "tcp_logs", msgTCPLogs},
		{&accesslogv3.StreamAccessLogsMessage_HTTPAccessLogEntries{}, "log_entry", entriesLogEntry},
		{&accesslogdatav3.HTTPAccessLogEntry{}, "common_properties", entryCommon},
		{&accesslogdatav3.HTTPAccessLogEntry{}, "request", entryRequest},
		{&accesslogdatav3.HTTPAccessLogEntry{}, "response", entryResponse},
		{&accesslogdatav3.AccessLogCommon{}, "downstream_remote_address", commonDownstreamRemote},
		{&accesslogdatav3.AccessLogCommon{}, "start_time", commonStartTime},
		{&accesslogdatav3.AccessLogCommon{}, "time_to_first_upstream_tx_byte", commonFirstUpstreamTx},
		{&accesslogdatav3.AccessLogCommon{}, "time_to_first_upstream_rx_byte", commonFirstUpstreamRx},
		{&accesslogdatav3.AccessLogCommon{}, "time_to_last_upstream_rx_byte", commonLastUpstreamRx},
		{&accesslogdatav3.AccessLogCommon{}, "time_to_last_downstream_tx_byte", commonLastDownstreamTx},
		{&accesslogdatav3.AccessLogCommon{}, "upstream_remote_address", commonUpstreamRemote},
		{&accesslogdatav3.AccessLogCommon{}, "upstream_cluster", commonUpstreamCluster},
		{&accesslogdatav3.AccessLogCommon{}, "response_flags", commonResponseFlags},
		{&accesslogdatav3.AccessLogCommon{}, "route_name", commonRouteName},
		{&accesslogdatav3.AccessLogCommon{}, "downstream_direct_remote_address", commonDownstreamDirect},
		{&accesslogdatav3.AccessLogCommon{}, "duration", commonDuration},
		{&accesslogdatav3.HTTPRequestProperties{}, "request_method", requestMethod},
		{&accesslogdatav3.HTTPRequestProperties{}, "scheme", requestScheme},
		{&accesslogdatav3.HTTPRequestProperties{}, "authority", requestAuthority},
		{&accesslogdatav3.HTTPRequestProperties{}, "path", requestPath},
		{&accesslogdatav3.HTTPRequestProperties{}, "request_id", requestID},
		{&accesslogdatav3.HTTPRequestProperties{}, "request_headers_bytes", requestHeadersBytes},
		{&accesslogdatav3.HTTPRequestProperties{}, "request_body_bytes", requestBodyBytes},
		{&accesslogdatav3.HTTPResponseProperties{}, "response_code", responseCode},
		{&accesslogdatav3.HTTPResponseProperties{}, "response_headers_bytes", responseHeadersBytes},
		{&accesslogdatav3.HTTPResponseProperties{}, "response_body_bytes", responseBodyBytes},
		{&corev3.Address{}, "socket_address", addressSocket},
		{&corev3.Address{}, "pipe", addressPipe},
		{&corev3.Address{}, "envoy_internal_address", addressInternal},
		{&corev3.SocketAddress{}, "address", socketAddress},
		{&corev3.SocketAddress{}, "port_value", socketPortValue},
		{&corev3.SocketAddress{}, "named_port", socketNamedPort},
		{&wrapperspb.UInt32Value{}, "value", wrapperValue},
		{&timestamppb.Timestamp{}, "seconds", timeSeconds},
		{&timestamppb.Timestamp{}, "nanos", timeNanos},
		{&durationpb.Duration{}, "seconds", timeSeconds},
		{&durationpb.Duration{}, "nanos", timeNanos},
	} {
		d := f.msg.ProtoReflect().Descriptor()
		if got := d.Fields().ByName(f.name); got == nil || got.Number() != f.num {
			t.Errorf("%s.%s: read as field %d, the descriptor says %v", d.FullName(), f.name, f.num, got)
		}
	}
}

// TestDecoderReadsAsProtobuf: what no Envoy sends but protobuf allows
// (fields given twice, a oneof switching member, TCP entries after HTTP
// ones) reads as the generated message would.
func TestDecoderReadsAsProtobuf(t *testing.T) {
	field := func(num protowire.Number, m proto.Message) []byte {
		raw, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), raw)
	}
	common := func(c *accesslogdatav3.AccessLogCommon) []byte { return field(entryCommon, c) }
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	pipe := &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/p"}}}
	named := &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{PortSpecifier: &corev3.SocketAddress_NamedPort{NamedPort: "http"}}}}
	for name, entry := range map[string][]byte{
		"common properties twice merge": cat(
			common(&accesslogdatav3.AccessLogCommon{RouteName: "a", UpstreamRemoteAddress: addr("10.0.0.1", 80), ResponseFlags: &accesslogdatav3.ResponseFlags{NoRouteFound: true}}),
			common(&accesslogdatav3.AccessLogCommon{UpstreamCluster: "c", Duration: durationpb.New(time.Second), ResponseFlags: &accesslogdatav3.ResponseFlags{LocalReset: true}}),
		),
		"an address's socket then a pipe": cat(
			common(&accesslogdatav3.AccessLogCommon{UpstreamRemoteAddress: addr("10.0.0.1", 80)}),
			common(&accesslogdatav3.AccessLogCommon{UpstreamRemoteAddress: pipe}),
		),
		"a pipe then a socket": cat(
			common(&accesslogdatav3.AccessLogCommon{DownstreamRemoteAddress: pipe}),
			common(&accesslogdatav3.AccessLogCommon{DownstreamRemoteAddress: addr("192.0.2.1", 5)}),
		),
		"a port then a named port": cat(
			common(&accesslogdatav3.AccessLogCommon{UpstreamRemoteAddress: addr("10.0.0.1", 80)}),
			common(&accesslogdatav3.AccessLogCommon{UpstreamRemoteAddress: named}),
		),
		"a duration's fields merge": cat(
			common(&accesslogdatav3.AccessLogCommon{Duration: &durationpb.Duration{Seconds: 2}}),
			common(&accesslogdatav3.AccessLogCommon{Duration: &durationpb.Duration{Nanos: 5e6}}),
		),
		"requests and responses twice": cat(
			field(entryRequest, &accesslogdatav3.HTTPRequestProperties{Path: "/a", RequestMethod: corev3.RequestMethod_PUT}),
			field(entryRequest, &accesslogdatav3.HTTPRequestProperties{Authority: "h", RequestBodyBytes: 3}),
			field(entryResponse, &accesslogdatav3.HTTPResponseProperties{ResponseCode: wrapperspb.UInt32(200)}),
			field(entryResponse, &accesslogdatav3.HTTPResponseProperties{ResponseBodyBytes: 9}),
		),
		"a known field of another wire type is an unknown field": cat(
			protowire.AppendVarint(protowire.AppendTag(nil, entryCommon, protowire.VarintType), 7),
			field(entryRequest, &accesslogdatav3.HTTPRequestProperties{Path: "/p"}),
		),
	} {
		t.Run(name, func(t *testing.T) {
			checkAsProtobuf(t, entry)
		})
	}

	t.Run("TCP entries after HTTP ones replace them", func(t *testing.T) {
		http := field(msgHTTPLogs, &accesslogv3.StreamAccessLogsMessage_HTTPAccessLogEntries{LogEntry: []*accesslogdatav3.HTTPAccessLogEntry{{}, {}}})
		tcp := field(msgTCPLogs, &accesslogv3.StreamAccessLogsMessage_TCPAccessLogEntries{})
		id := field(msgIdentifier, &accesslogv3.StreamAccessLogsMessage_Identifier{Node: &corev3.Node{Id: "e"}})
		id2 := field(msgIdentifier, &accesslogv3.StreamAccessLogsMessage_Identifier{Node: &corev3.Node{Cluster: "c"}})
		for _, tc := range []struct {
			msg  []byte
			want int
		}{{cat(http, http), 4}, {cat(http, tcp), 0}, {cat(http, tcp, http), 2}, {cat(id, http, id2), 2}} {
			var m accesslogv3.StreamAccessLogsMessage
			if err := proto.Unmarshal(tc.msg, &m); err != nil {
				t.Fatal(err)
			}
			gotID, entries, err := NewDecoder().Message(tc.msg)
			if err != nil || len(entries) != tc.want || len(m.GetHttpLogs().GetLogEntry()) != tc.want {
				t.Fatalf("%d entries (%v), protobuf %d, want %d", len(entries), err, len(m.GetHttpLogs().GetLogEntry()), tc.want)
			}
			if !proto.Equal(gotID, m.GetIdentifier()) {
				t.Fatalf("identifier %v, protobuf %v", gotID, m.GetIdentifier())
			}
		}
	})

	t.Run("malformed", func(t *testing.T) {
		for _, b := range [][]byte{{0x12}, {0x12, 0x05, 0x0a}, wrap([]byte{0x0a, 0x02, 0x82, 0x01}), wrap([]byte{0x0a, 0x03, 0x82, 0x01, 0x01})} {
			if _, _, err := NewDecoder().Message(b); err == nil {
				t.Errorf("% x decoded", b)
			}
		}
	})
}

// FuzzDecoder: whatever protobuf reads as an entry, the Decoder reads into
// the same row and pod request as the generated message gives.
func FuzzDecoder(f *testing.F) {
	for _, e := range fuzzEntries() {
		raw, err := proto.Marshal(e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var e accesslogdatav3.HTTPAccessLogEntry
		if proto.Unmarshal(raw, &e) != nil {
			return
		}
		checkAsProtobuf(t, raw)
	})
}

// checkAsProtobuf: entry decodes into the row and pod request that the
// generated message gives.
func checkAsProtobuf(t *testing.T, entry []byte) {
	t.Helper()
	var e accesslogdatav3.HTTPAccessLogEntry
	if err := proto.Unmarshal(entry, &e); err != nil {
		t.Fatal(err)
	}
	_, entries, err := NewDecoder().Message(wrap(entry))
	if err != nil || len(entries) != 1 {
		t.Fatalf("%d entries, %v", len(entries), err)
	}
	got, want := Row("p", &entries[0]), protoRow("p", &e)
	if (got.LatencyMS == nil) != (want.LatencyMS == nil) || (got.LatencyMS != nil && *got.LatencyMS != *want.LatencyMS) {
		t.Fatalf("latency %v, protobuf %v", got.LatencyMS, want.LatencyMS)
	}
	got.LatencyMS, want.LatencyMS = nil, nil
	if got != want {
		t.Fatalf("row\n%+v\nprotobuf\n%+v", got, want)
	}
	if got, want := PodRequest("r", &entries[0]), protoPodRequest("r", &e); got != want {
		t.Fatalf("pod request %+v, protobuf %+v", got, want)
	}
}

// protoRow and protoPodRequest read the generated message: what Row and
// PodRequest did before the Decoder, kept as the reference it is held to.
func protoRow(environment string, e *accesslogdatav3.HTTPAccessLogEntry) logsink.Row {
	c, req, resp := e.GetCommonProperties(), e.GetRequest(), e.GetResponse()
	upstream := protoAddress(c.GetUpstreamRemoteAddress())
	row := logsink.Row{
		Timestamp:     c.GetStartTime().AsTime().UTC(),
		ClientIP:      clientIP(c.GetDownstreamRemoteAddress().GetSocketAddress().GetAddress(), c.GetDownstreamDirectRemoteAddress().GetSocketAddress().GetAddress()),
		TargetURL:     cmp.Or(req.GetScheme(), "http") + "://" + cmp.Or(upstream, req.GetAuthority()) + req.GetPath(),
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
	if d := cmp.Or(c.GetDuration(), c.GetTimeToLastDownstreamTxByte()); d != nil {
		ms := int32(min(d.AsDuration().Milliseconds(), 1<<31-1))
		row.LatencyMS = &ms
	}
	return row
}

func protoPodRequest(route string, e *accesslogdatav3.HTTPAccessLogEntry) podtraffic.Request {
	c := e.GetCommonProperties()
	sent := c.GetTimeToFirstUpstreamTxByte()
	upstream := protoAddress(c.GetUpstreamRemoteAddress())
	if upstream == "" || sent == nil {
		return podtraffic.Request{Route: route}
	}
	end := cmp.Or(c.GetTimeToLastUpstreamRxByte(), c.GetDuration(), c.GetTimeToLastDownstreamTxByte())
	return podtraffic.Request{
		Route:    route,
		Upstream: upstream,
		Duration: max(end.AsDuration()-sent.AsDuration(), 0),
		Failed:   c.GetTimeToFirstUpstreamRxByte() == nil || e.GetResponse().GetResponseCode().GetValue() >= 500,
	}
}

func protoAddress(a *corev3.Address) string {
	sa := a.GetSocketAddress()
	if sa.GetAddress() == "" {
		return ""
	}
	return net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10))
}

func fuzzEntries() []*accesslogdatav3.HTTPAccessLogEntry {
	start := time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)
	return []*accesslogdatav3.HTTPAccessLogEntry{
		{},
		{
			CommonProperties: &accesslogdatav3.AccessLogCommon{
				StartTime: timestamppb.New(start), DownstreamRemoteAddress: addr("192.0.2.9", 51000),
				UpstreamRemoteAddress: addr("10.213.0.2", 8080), RouteName: "ml/resnet", UpstreamCluster: "ml/resnet",
				TimeToFirstUpstreamTxByte: durationpb.New(time.Millisecond), TimeToFirstUpstreamRxByte: durationpb.New(30 * time.Millisecond),
				TimeToLastUpstreamRxByte: durationpb.New(36 * time.Millisecond), Duration: durationpb.New(37 * time.Millisecond),
				ResponseFlags: &accesslogdatav3.ResponseFlags{UpstreamRetryLimitExceeded: true},
			},
			Request: &accesslogdatav3.HTTPRequestProperties{Scheme: "https", Authority: "h", Path: "/models/resnet?x=1", RequestMethod: 3,
				RequestId: "r-1", RequestHeadersBytes: 10, RequestBodyBytes: 5},
			Response: &accesslogdatav3.HTTPResponseProperties{ResponseCode: wrapperspb.UInt32(200), ResponseHeadersBytes: 7, ResponseBodyBytes: 1},
		},
		{
			CommonProperties: &accesslogdatav3.AccessLogCommon{StartTime: timestamppb.New(time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)),
				Duration: durationpb.New(-time.Hour), TimeToLastDownstreamTxByte: &durationpb.Duration{Seconds: 1 << 62},
				DownstreamDirectRemoteAddress: addr("::ffff:192.0.2.1", 0)},
			Request:  &accesslogdatav3.HTTPRequestProperties{Path: "/é", RequestMethod: 99},
			Response: &accesslogdatav3.HTTPResponseProperties{ResponseCode: wrapperspb.UInt32(1 << 31)},
		},
	}
}

// TestClientIPFallsBack: the direct remote address when the remote one is
// not an IP, and the unspecified address when neither is.
func TestClientIPFallsBack(t *testing.T) {
	if got := clientIP("", "::ffff:192.0.2.1"); got != netip.MustParseAddr("192.0.2.1") {
		t.Fatalf("got %v", got)
	}
	if got := clientIP("/pipe", ""); got != netip.IPv4Unspecified() {
		t.Fatalf("got %v", got)
	}
}
