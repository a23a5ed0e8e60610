package accesslogfile_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"google.golang.org/protobuf/proto"

	"github.com/nemesis-ml/nemesis/extproc/accesslog"
	"github.com/nemesis-ml/nemesis/extproc/logsink"
	"github.com/nemesis-ml/nemesis/extproc/podtraffic"
	"github.com/nemesis-ml/nemesis/internal/accesslogfile"
)

// Records Envoy 1.40 wrote with Format: a request a pod answered, and one
// without a route.
const (
	served = "1796575908.120684 127.0.0.1 http 500 - 300 1 138 1 100631 10 100553 100621 10.213.137.206:33061 e2e-qlzl6/demo e2e-qlzl6/demo\n" +
		"m DELETE\na 127.0.0.1:25004\np /models/demo/item/945/500\nr 4f46f585-c7e7-4666-94dc-9e58295d8aef\n"
	noRoute = "1796575910.820318 127.0.0.1 http 404 NR 232 0 54 0 153 - - - - - -\n" +
		"m GET\na 127.0.0.1:25004\np /nowhere\nr 49731688-6c1b-479f-a059-e3349ab931ab\n"
)

// decoded is what serve makes of the record: its entry, sent as the
// shipper sends it, read by serve's decoder.
func decoded(t *testing.T, record string) (logsink.Row, podtraffic.Request) {
	t.Helper()
	e, err := accesslogfile.Parse([]byte(record))
	if err != nil {
		t.Fatal(err)
	}
	b, err := proto.Marshal(&accesslogv3.StreamAccessLogsMessage{LogEntries: &accesslogv3.StreamAccessLogsMessage_HttpLogs{
		HttpLogs: &accesslogv3.StreamAccessLogsMessage_HTTPAccessLogEntries{LogEntry: []*accesslogdatav3.HTTPAccessLogEntry{e}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	_, entries, err := accesslog.NewDecoder().Message(b)
	if err != nil || len(entries) != 1 {
		t.Fatalf("serve decodes %d entries: %v", len(entries), err)
	}
	row := accesslog.Row("prod", &entries[0])
	return row, accesslog.PodRequest(row.Route, &entries[0])
}

func TestServeReadsTheRecordsAsEnvoysGRPCEntries(t *testing.T) {
	row, req := decoded(t, served)
	ms := int32(100)
	want := logsink.Row{
		Timestamp: time.Unix(1796575908, 120684000).UTC(), ClientIP: netip.MustParseAddr("127.0.0.1"),
		TargetURL: "http://10.213.137.206:33061/models/demo/item/945/500", Method: "DELETE",
		Status: 500, LatencyMS: &ms, Environment: "prod", Route: "e2e-qlzl6/demo", UpstreamHost: "10.213.137.206:33061",
		RequestID: "4f46f585-c7e7-4666-94dc-9e58295d8aef", BytesReceived: 301, BytesSent: 139,
	}
	if !rowsEqual(row, want) {
		t.Errorf("row\n%+v, want\n%+v", row, want)
	}
	if wantReq := (podtraffic.Request{Route: "e2e-qlzl6/demo", Upstream: "10.213.137.206:33061",
		Duration: (100621 - 10) * time.Microsecond, Failed: true}); req != wantReq {
		t.Errorf("pod request %+v, want %+v", req, wantReq)
	}

	row, req = decoded(t, noRoute+"\n") // with the empty line that ends it
	if row.ResponseFlags != "NR" || row.UpstreamHost != "" || row.Route != "" || row.TargetURL != "http://127.0.0.1:25004/nowhere" || row.Status != 404 {
		t.Errorf("row of a request without a route: %+v", row)
	}
	if req != (podtraffic.Request{}) {
		t.Errorf("a request that reached no pod is no pod's: %+v", req)
	}
}

func TestWhatAClientSendsStaysInItsLine(t *testing.T) {
	// Spaces, tabs, quotes and "-" in what a client chooses move no field.
	r := strings.NewReplacer("p /models/demo/item/945/500", "p /a b\t\"c\" 200 -", "a 127.0.0.1:25004", "a x y",
		"r 4f46f585-c7e7-4666-94dc-9e58295d8aef", "r  spaced ").Replace(served)
	row, req := decoded(t, r)
	if row.TargetURL != "http://10.213.137.206:33061/a b\t\"c\" 200 -" || row.RequestID != " spaced " || row.Status != 500 || req.Upstream != "10.213.137.206:33061" {
		t.Errorf("row %+v", row)
	}
}

// rowsEqual compares rows by their latency's value and their time's
// instant.
func rowsEqual(a, b logsink.Row) bool {
	if (a.LatencyMS == nil) != (b.LatencyMS == nil) || (a.LatencyMS != nil && *a.LatencyMS != *b.LatencyMS) ||
		!a.Timestamp.Equal(b.Timestamp) {
		return false
	}
	a.LatencyMS, a.Timestamp = b.LatencyMS, b.Timestamp
	return a == b
}

func TestBytesThatAreNotUTF8BecomeReplacementCharacters(t *testing.T) {
	// A protobuf string must be UTF-8: the shipper could never send the
	// entry otherwise.
	row, _ := decoded(t, strings.Replace(served, "p /models", "p /\xffmodels", 1))
	if want := "http://10.213.137.206:33061/\uFFFDmodels/demo/item/945/500"; row.TargetURL != want {
		t.Errorf("target URL %q, want %q", row.TargetURL, want)
	}
}

func TestFlags(t *testing.T) {
	// An unknown flag (a newer Envoy's) is skipped.
	row, _ := decoded(t, strings.Replace(served, " 500 - ", " 503 UH,UF,UAEX,ZZ ", 1))
	if row.Status != 503 || row.ResponseFlags != "UH,UF,UAEX" {
		t.Errorf("status %d flags %q", row.Status, row.ResponseFlags)
	}
}

func TestBadRecordsAreRefused(t *testing.T) {
	for name, record := range map[string]string{
		"a JSON line":         `{"start":"1796575908.120684"}`,
		"a cut record":        served[:100],
		"a line missing":      strings.Replace(served, "m DELETE\n", "", 1),
		"a line too many":     served + "x y\n",
		"lines out of order":  strings.Replace(served, "m DELETE\na 127.0.0.1:25004\n", "a 127.0.0.1:25004\nm DELETE\n", 1),
		"a field missing":     strings.Replace(served, " 138 1 ", " 138 ", 1),
		"a field too many":    strings.Replace(served, " 138 1 ", " 138 1 1 ", 1),
		"start not seconds":   strings.Replace(served, "1796575908.120684", "yesterday", 1),
		"start past nanos":    strings.Replace(served, "1796575908.120684", "1.0123456789", 1),
		"a count not a count": strings.Replace(served, " 138 1 ", " 138 many ", 1),
		"a negative count":    strings.Replace(served, " 138 1 ", " 138 -1 ", 1),
		"upstream no port":    strings.Replace(served, " 10.213.137.206:33061 ", " 10.213.137.206 ", 1),
		"upstream bad port":   strings.Replace(served, " 10.213.137.206:33061 ", " 10.213.137.206:99999 ", 1),
	} {
		if _, err := accesslogfile.Parse([]byte(record)); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

// FuzzParse: any record either is refused or becomes an entry that can be
// sent and that serve reads.
func FuzzParse(f *testing.F) {
	f.Add(served)
	f.Add(noRoute)
	f.Add(strings.Replace(served, "p /models", "p /\xff\xfemodels", 1))
	f.Fuzz(func(t *testing.T, record string) {
		e, err := accesslogfile.Parse([]byte(record))
		if err != nil {
			return
		}
		b, err := proto.Marshal(&accesslogv3.StreamAccessLogsMessage{LogEntries: &accesslogv3.StreamAccessLogsMessage_HttpLogs{
			HttpLogs: &accesslogv3.StreamAccessLogsMessage_HTTPAccessLogEntries{LogEntry: []*accesslogdatav3.HTTPAccessLogEntry{e}},
		}})
		if err != nil {
			// The shipper could never send its batch.
			t.Fatalf("entry of %q does not marshal: %v", record, err)
		}
		if _, entries, err := accesslog.NewDecoder().Message(b); err != nil || len(entries) != 1 {
			t.Fatalf("serve reads %d entries of %q: %v", len(entries), record, err)
		}
	})
}
