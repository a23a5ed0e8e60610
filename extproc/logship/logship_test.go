package logship

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// service counts the entries of the streams it answered.
type service struct {
	accesslogv3.UnimplementedAccessLogServiceServer
	entries atomic.Int64
}

func (s *service) StreamAccessLogs(stream accesslogv3.AccessLogService_StreamAccessLogsServer) error {
	var n int64
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			s.entries.Add(n)
			return stream.SendAndClose(&accesslogv3.StreamAccessLogsResponse{})
		}
		if err != nil {
			return err
		}
		n += int64(len(msg.GetHttpLogs().GetLogEntry()))
	}
}

func startService(t *testing.T) (*service, *grpc.ClientConn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	svc := &service{}
	g := grpc.NewServer()
	accesslogv3.RegisterAccessLogServiceServer(g, svc)
	go func() { _ = g.Serve(l) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return svc, conn
}

// appendRecords writes n records as Envoy writes them.
func appendRecords(t *testing.T, path string, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	for i := range n {
		if _, err := fmt.Fprintf(f, "1796575908.120684 127.0.0.1 http 200 - 300 1 138 1 100631 10 100553 100621 10.0.0.1:8080 ml/a ml/a\n"+
			"m GET\na models\np /a/%d\nr id-%d\n\n", i, i); err != nil {
			t.Fatal(err)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s: %s", what)
		}
	}
}

// TestShipsWhatEnvoyWritesWhileItDrains: after SIGTERM (ctx's end) the
// shipper goes on while Envoy runs, then ships the last records and stops;
// with Envoy never gone, it stops at ShutdownGrace.
func TestShipsWhatEnvoyWritesWhileItDrains(t *testing.T) {
	svc, conn := startService(t)
	path := filepath.Join(t.TempDir(), "access.log")
	var alive atomic.Bool
	alive.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, slog.New(slog.DiscardHandler), Config{
			Path: path, RotateBytes: 1 << 20, Conn: conn, Interval: 20 * time.Millisecond, BatchBytes: 1 << 20,
			Identifier:    &accesslogv3.StreamAccessLogsMessage_Identifier{},
			Reopen:        func(context.Context) error { return nil },
			ShutdownGrace: time.Minute,
			EnvoyAlive:    func(context.Context) bool { return alive.Load() },
		})
	}()
	appendRecords(t, path, 3)
	waitFor(t, "3 entries shipped", func() bool { return svc.entries.Load() == 3 })

	cancel() // SIGTERM: Envoy drains and logs on
	time.Sleep(100 * time.Millisecond)
	appendRecords(t, path, 2)
	waitFor(t, "5 entries shipped", func() bool { return svc.entries.Load() == 5 })
	select {
	case <-done:
		t.Fatal("stopped while Envoy runs")
	case <-time.After(200 * time.Millisecond):
	}
	appendRecords(t, path, 4) // Envoy's last flush as it exits
	alive.Store(false)
	select {
	case err := <-done:
		if err != nil || svc.entries.Load() != 9 {
			t.Fatalf("stopped with %d entries shipped of 9: %v", svc.entries.Load(), err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still running 10 s after Envoy was gone")
	}

	// Envoy never gone: ShutdownGrace ends it.
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	err := Run(ctx, slog.New(slog.DiscardHandler), Config{
		Path: path, RotateBytes: 1 << 20, Conn: conn, Interval: 20 * time.Millisecond, BatchBytes: 1 << 20,
		Identifier: &accesslogv3.StreamAccessLogsMessage_Identifier{}, Reopen: func(context.Context) error { return nil },
		ShutdownGrace: 300 * time.Millisecond, EnvoyAlive: func(context.Context) bool { return true },
	})
	if took := time.Since(start); err != nil || took < 300*time.Millisecond || took > 3*time.Second {
		t.Fatalf("with Envoy running on, stopped after %v (grace 300ms): %v", took, err)
	}
}
