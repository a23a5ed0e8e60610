package accesslog

import (
	"net/netip"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/nemesis-ml/nemesis/extproc/logsink"
	"github.com/nemesis-ml/nemesis/extproc/podtraffic"
)

func addr(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func TestRow(t *testing.T) {
	start := time.Date(2026, 5, 4, 10, 0, 0, 123456000, time.FixedZone("CEST", 2*3600))
	ms := func(n int32) *int32 { return &n }
	for name, tc := range map[string]struct {
		entry *accesslogdatav3.HTTPAccessLogEntry
		want  logsink.Row
	}{
		"served by an upstream": {
			entry: &accesslogdatav3.HTTPAccessLogEntry{
				CommonProperties: &accesslogdatav3.AccessLogCommon{
					StartTime:               timestamppb.New(start),
					DownstreamRemoteAddress: addr("192.0.2.9", 51000),
					UpstreamRemoteAddress:   addr("10.213.0.2", 8080),
					UpstreamCluster:         "ml/resnet",
					RouteName:               "ml/resnet",
					Duration:                durationpb.New(37*time.Millisecond + 900*time.Microsecond),
				},
				Request: &accesslogdatav3.HTTPRequestProperties{
					RequestMethod: corev3.RequestMethod_POST, Scheme: "http", Authority: "models.example",
					Path: "/models/resnet/predict?v=2", RequestId: "abc", RequestHeadersBytes: 100, RequestBodyBytes: 20,
				},
				Response: &accesslogdatav3.HTTPResponseProperties{
					ResponseCode: wrapperspb.UInt32(500), ResponseHeadersBytes: 80, ResponseBodyBytes: 5,
				},
			},
			want: logsink.Row{
				Timestamp: start.UTC(), ClientIP: netip.MustParseAddr("192.0.2.9"),
				TargetURL: "http://10.213.0.2:8080/models/resnet/predict?v=2", Method: "POST", Status: 500,
				LatencyMS: ms(37), Environment: "production", Route: "ml/resnet", UpstreamHost: "10.213.0.2:8080",
				RequestID: "abc", BytesReceived: 120, BytesSent: 85,
			},
		},
		"no healthy upstream, no response code, IPv4-mapped client": {
			entry: &accesslogdatav3.HTTPAccessLogEntry{
				CommonProperties: &accesslogdatav3.AccessLogCommon{
					StartTime:               timestamppb.New(start),
					DownstreamRemoteAddress: addr("::ffff:192.0.2.10", 1),
					UpstreamCluster:         "ml/bert",
					ResponseFlags:           &accesslogdatav3.ResponseFlags{NoHealthyUpstream: true, DownstreamConnectionTermination: true},
				},
				Request: &accesslogdatav3.HTTPRequestProperties{
					RequestMethod: corev3.RequestMethod_GET, Authority: "127.0.0.1:10000", Path: "/models/bert",
				},
			},
			want: logsink.Row{
				Timestamp: start.UTC(), ClientIP: netip.MustParseAddr("192.0.2.10"),
				TargetURL: "http://127.0.0.1:10000/models/bert", Method: "GET", Status: 0,
				Environment: "production", Route: "ml/bert", ResponseFlags: "UH,DC",
			},
		},
		"no client address": {
			entry: &accesslogdatav3.HTTPAccessLogEntry{
				CommonProperties: &accesslogdatav3.AccessLogCommon{StartTime: timestamppb.New(start)},
				Request:          &accesslogdatav3.HTTPRequestProperties{Authority: "a", Path: "/"},
			},
			want: logsink.Row{
				Timestamp: start.UTC(), ClientIP: netip.IPv4Unspecified(), TargetURL: "http://a/", Environment: "production",
			},
		},
	} {
		t.Run(name, func(t *testing.T) {
			got := Row("production", decode(t, tc.entry))
			if (got.LatencyMS == nil) != (tc.want.LatencyMS == nil) || (got.LatencyMS != nil && *got.LatencyMS != *tc.want.LatencyMS) {
				t.Fatalf("latency %v, want %v", got.LatencyMS, tc.want.LatencyMS)
			}
			got.LatencyMS, tc.want.LatencyMS = nil, nil
			if got != tc.want {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestEnvironment(t *testing.T) {
	if got := Environment(&corev3.Node{Cluster: "staging"}); got != "staging" {
		t.Fatalf("staging node: %q", got)
	}
	if got := Environment(nil); got != "default" {
		t.Fatalf("no node: %q", got)
	}
}

func TestWithoutQuery(t *testing.T) {
	for in, want := range map[string]string{
		"http://10.0.0.1:8080/models/a/predict?key=secret&user=7": "http://10.0.0.1:8080/models/a/predict",
		"http://a/b#frag": "http://a/b",
		"http://a/b":      "http://a/b",
		"http://a/?":      "http://a/",
	} {
		if got := WithoutQuery(in); got != want {
			t.Errorf("WithoutQuery(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPodRequest(t *testing.T) {
	d := func(ms float64) *durationpb.Duration {
		return durationpb.New(time.Duration(ms * float64(time.Millisecond)))
	}
	entry := func(upstream *corev3.Address, code uint32, c *accesslogdatav3.AccessLogCommon) *accesslogdatav3.HTTPAccessLogEntry {
		c.UpstreamRemoteAddress = upstream
		return &accesslogdatav3.HTTPAccessLogEntry{CommonProperties: c, Response: &accesslogdatav3.HTTPResponseProperties{ResponseCode: wrapperspb.UInt32(code)}}
	}
	pod := addr("10.213.0.2", 8080)
	for name, tc := range map[string]struct {
		entry *accesslogdatav3.HTTPAccessLogEntry
		want  podtraffic.Request
	}{
		"answered: timed from the first byte sent to the pod to its last byte, the hold before excluded": {
			entry: entry(pod, 200, &accesslogdatav3.AccessLogCommon{
				TimeToFirstUpstreamTxByte: d(900), TimeToFirstUpstreamRxByte: d(930), TimeToLastUpstreamRxByte: d(942.5), Duration: d(943),
			}),
			want: podtraffic.Request{Route: "ml/r", Upstream: "10.213.0.2:8080", Duration: 42500 * time.Microsecond},
		},
		"a 5xx of the pod is its error": {
			entry: entry(pod, 503, &accesslogdatav3.AccessLogCommon{TimeToFirstUpstreamTxByte: d(1), TimeToFirstUpstreamRxByte: d(2), TimeToLastUpstreamRxByte: d(3)}),
			want:  podtraffic.Request{Route: "ml/r", Upstream: "10.213.0.2:8080", Duration: 2 * time.Millisecond, Failed: true},
		},
		"reset by the pod before answering": {
			entry: entry(pod, 503, &accesslogdatav3.AccessLogCommon{TimeToFirstUpstreamTxByte: d(1), Duration: d(11)}),
			want:  podtraffic.Request{Route: "ml/r", Upstream: "10.213.0.2:8080", Duration: 10 * time.Millisecond, Failed: true},
		},
		"connection to the pod failed: the route's error": {
			entry: entry(pod, 503, &accesslogdatav3.AccessLogCommon{Duration: d(3)}),
			want:  podtraffic.Request{Route: "ml/r"},
		},
		"no healthy pod": {
			entry: entry(nil, 503, &accesslogdatav3.AccessLogCommon{Duration: d(1)}),
			want:  podtraffic.Request{Route: "ml/r"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			if got := PodRequest("ml/r", decode(t, tc.entry)); got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
