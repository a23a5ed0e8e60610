package command

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"
)

// TestConnectAndMigrateRetriesUntilCancelled: serve waits for a database
// that is not there yet for as long as its context lasts, well past the
// first seconds (a fresh install's PostgreSQL creates its database while
// the control plane starts), and says why it stopped.
func TestConnectAndMigrateRetriesUntilCancelled(t *testing.T) {
	// A port that refuses connections: closed right after it was chosen.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err = connectAndMigrate(ctx, slog.New(slog.DiscardHandler), "postgres://nemesis@"+addr+"/nemesis?sslmode=disable")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("connectAndMigrate = %v, want the context's deadline", err)
	}
}
