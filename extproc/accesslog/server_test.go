package accesslog

import (
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nemesis-ml/nemesis/extproc/logsink"
)

type rowsSink struct {
	mu   sync.Mutex
	rows []logsink.Row
}

func (s *rowsSink) Add(rows ...logsink.Row) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rows = append(s.rows, rows...)
}

func TestFutureTimestampsAreClampedAndCounted(t *testing.T) {
	sink := &rowsSink{}
	srv := New(sink, slog.New(slog.DiscardHandler), Options{Registerer: prometheus.NewRegistry()})
	now := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	srv.now = func() time.Time { return now }
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	srv.Register(g)
	go func() { _ = g.Serve(l) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	stream, err := accesslogv3.NewAccessLogServiceClient(conn).StreamAccessLogs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	entry := func(start time.Time) *accesslogdatav3.HTTPAccessLogEntry {
		return &accesslogdatav3.HTTPAccessLogEntry{CommonProperties: &accesslogdatav3.AccessLogCommon{StartTime: timestamppb.New(start)}}
	}
	err = stream.Send(&accesslogv3.StreamAccessLogsMessage{
		Identifier: &accesslogv3.StreamAccessLogsMessage_Identifier{Node: &corev3.Node{Id: "e", Cluster: "production"}},
		LogEntries: &accesslogv3.StreamAccessLogsMessage_HttpLogs{HttpLogs: &accesslogv3.StreamAccessLogsMessage_HTTPAccessLogEntries{
			LogEntry: []*accesslogdatav3.HTTPAccessLogEntry{
				entry(now.Add(-time.Second)), entry(now.Add(30 * time.Second)), entry(now.AddDate(10, 0, 0)),
			},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
	want := []time.Time{now.Add(-time.Second), now.Add(30 * time.Second), now}
	if len(sink.rows) != len(want) {
		t.Fatalf("%d rows, want %d", len(sink.rows), len(want))
	}
	for i, r := range sink.rows {
		if !r.Timestamp.Equal(want[i]) || r.Environment != "production" {
			t.Errorf("row %d: %v in %q, want %v in production", i, r.Timestamp, r.Environment, want[i])
		}
	}
	if got := testutil.ToFloat64(srv.clamped); got != 1 {
		t.Fatalf("clamped counted %v, want 1", got)
	}
}
