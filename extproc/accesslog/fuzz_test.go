package accesslog

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/nemesis-ml/nemesis/extproc/logsink"
)

// FuzzRow: any message an Envoy could send (valid protobuf or not), under
// any environment, is refused or becomes rows that the sink either stores
// within every bound or rejects with a reason.
func FuzzRow(f *testing.F) {
	for _, e := range []*accesslogdatav3.HTTPAccessLogEntry{
		{},
		{
			CommonProperties: &accesslogdatav3.AccessLogCommon{
				StartTime: timestamppb.New(time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)), DownstreamRemoteAddress: addr("192.0.2.9", 51000),
				UpstreamRemoteAddress: addr("10.213.0.2", 8080), RouteName: "ml/resnet", Duration: durationpb.New(37 * time.Millisecond),
			},
			Request:  &accesslogdatav3.HTTPRequestProperties{Authority: "h", Path: "/models/resnet?x=1", RequestMethod: 3, RequestId: "r-1"},
			Response: &accesslogdatav3.HTTPResponseProperties{ResponseCode: wrapperspb.UInt32(200)},
		},
		{
			CommonProperties: &accesslogdatav3.AccessLogCommon{StartTime: timestamppb.New(time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)), Duration: durationpb.New(-time.Hour)},
			Request:          &accesslogdatav3.HTTPRequestProperties{Path: "/" + strings.Repeat("é", 3000), RequestMethod: 99},
			Response:         &accesslogdatav3.HTTPResponseProperties{ResponseCode: wrapperspb.UInt32(1 << 31)},
		},
	} {
		raw, err := proto.Marshal(e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(wrap(raw), "production")
	}
	f.Add(wrap([]byte{0x0a, 0x02, 0x9a, 0x01}), strings.Repeat("e", 51))
	f.Add(wrap([]byte{0x1a, 0x03, 0x2a, 0x01, 0xff}), "invalid UTF-8 path")
	f.Fuzz(func(t *testing.T, raw []byte, environment string) {
		_, entries, err := NewDecoder().Message(raw)
		if err != nil {
			return
		}
		for i := range entries {
			checkRow(t, Row(environment, &entries[i]))
		}
	})
}

// checkRow: r is rejected with a reason or fits every column.
func checkRow(t *testing.T, r logsink.Row) {
	t.Helper()
	_, rejected := r.Check()
	if rejected != nil {
		if rejected.Reason == "" || rejected.Error == "" {
			t.Fatalf("rejected without a reason: %+v", rejected)
		}
		return
	}
	for _, s := range []string{r.TargetURL, r.Method, r.Environment, r.Route, r.UpstreamHost, r.ResponseFlags, r.RequestID} {
		if strings.ContainsRune(s, 0) || !utf8.ValidString(s) {
			t.Fatalf("accepted text PostgreSQL refuses: %q", s)
		}
	}
	switch {
	case len(r.TargetURL) > logsink.MaxURLBytes:
		t.Fatalf("accepted a %d-byte URL", len(r.TargetURL))
	case utf8.RuneCountInString(r.Environment) > logsink.MaxEnvironmentChars || len(r.Method) > logsink.MaxMethodChars:
		t.Fatalf("accepted environment %q, method %q past their columns", r.Environment, r.Method)
	case r.Status < 0 || r.Status > 999 || (r.LatencyMS != nil && *r.LatencyMS < 0) || r.BytesReceived < 0 || r.BytesSent < 0:
		t.Fatalf("accepted numbers out of range: %+v", r)
	case !r.ClientIP.IsValid():
		t.Fatalf("accepted a row without a client address")
	}
}
