package logsink

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nemesis-ml/nemesis/internal/database"
	"github.com/nemesis-ml/nemesis/internal/dev/servers"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

func TestMain(m *testing.M) { testenv.Run(m) }

func rows(from, n int) []Row {
	out := make([]Row, n)
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for i := range out {
		latency := int32(i % 50)
		out[i] = Row{
			Timestamp: base.Add(time.Duration(from+i) * time.Millisecond), ClientIP: netip.MustParseAddr("10.0.0.7"),
			TargetURL: fmt.Sprintf("http://10.1.0.1:8080/models/m/%d", from+i), Method: "POST", Status: 200,
			LatencyMS: &latency, Environment: "production", Route: "ml/m", UpstreamHost: "10.1.0.1:8080",
			RequestID: fmt.Sprintf("req-%d", from+i), BytesReceived: 10, BytesSent: 20,
		}
	}
	return out
}

type fixture struct {
	pg   *servers.Postgres
	url  string
	pool *pgxpool.Pool
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	pg, url := testenv.Database(t)
	pool, err := database.Open(testenv.Context(t, 10*time.Second), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return &fixture{pg: pg, url: url, pool: pool}
}

// run starts s.Run and returns a function that stops it and waits.
func run(t *testing.T, s *Sink) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(stop)
	return stop
}

func newSink(t *testing.T, f *fixture, cfg Config) *Sink {
	t.Helper()
	s, err := New(f.pool, cfg, prometheus.NewRegistry(), testLog())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func waitWritten(t *testing.T, s *Sink, n int64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for s.Stats().Written < n || s.Stats().Pending > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %+v, want %d written and none pending", timeout, s.Stats(), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkTable asserts proxy_logs holds rows 0..n-1, each once.
func checkTable(t *testing.T, f *fixture, n int) {
	t.Helper()
	var total, distinct int
	testenv.QueryRow(t, f.url, `SELECT count(*), count(DISTINCT request_id) FROM proxy_logs`, &total, &distinct)
	if total != n || distinct != n {
		t.Fatalf("proxy_logs has %d rows, %d distinct request ids; want %d of each", total, distinct, n)
	}
}

func TestRowsAreWrittenBySizeAndByTime(t *testing.T) {
	f := newFixture(t)
	s := newSink(t, f, Config{BatchSize: 100, FlushInterval: 200 * time.Millisecond, MemoryRows: 1000, SpillDir: t.TempDir(), SpillMaxBytes: 1 << 20, Writers: 2, MemoryBytes: 64 << 20, LeftoverMaxAge: time.Hour})
	run(t, s)
	s.Add(rows(0, 250)...) // two full batches at once, 50 rows by time
	waitWritten(t, s, 250, 10*time.Second)
	checkTable(t, f, 250)

	var got Row
	var latency int32
	testenv.QueryRow(t, f.url, `SELECT timestamp, client_ip, target_url, http_method, response_status, latency_ms,
		environment, route, upstream_host, response_flags, request_id, bytes_received, bytes_sent
		FROM proxy_logs WHERE request_id = 'req-7'`,
		&got.Timestamp, &got.ClientIP, &got.TargetURL, &got.Method, &got.Status, &latency, &got.Environment,
		&got.Route, &got.UpstreamHost, &got.ResponseFlags, &got.RequestID, &got.BytesReceived, &got.BytesSent)
	want := rows(7, 1)[0]
	got.LatencyMS, want.LatencyMS = nil, nil
	if latency != 7 || got != want {
		t.Fatalf("row 7 read back as %+v latency %d, want %+v latency 7", got, latency, want)
	}
}

func TestOutageSpillsAndWritesEverythingOnce(t *testing.T) {
	f := newFixture(t)
	s := newSink(t, f, Config{BatchSize: 50, FlushInterval: 100 * time.Millisecond, MemoryRows: 200, SpillDir: t.TempDir(), SpillMaxBytes: 1 << 22, Writers: 2, MemoryBytes: 64 << 20, LeftoverMaxAge: time.Hour})
	run(t, s)
	s.Add(rows(0, 100)...)
	waitWritten(t, s, 100, 10*time.Second)

	if err := f.pg.Stop(); err != nil {
		t.Fatal(err)
	}
	for i := 100; i < 1100; i += 10 { // more than memory holds
		s.Add(rows(i, 10)...)
		time.Sleep(time.Millisecond)
	}
	if st := s.Stats(); st.Spilled == 0 || st.Dropped != 0 || st.Pending != 1000 {
		t.Fatalf("during the outage: %+v, want rows spilled, none dropped, 1000 pending", st)
	}
	if err := f.pg.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitWritten(t, s, 1100, 30*time.Second)
	checkTable(t, f, 1100)
}

func TestRetriedBatchIsWrittenOnce(t *testing.T) {
	f := newFixture(t)
	s := newSink(t, f, Config{BatchSize: 10, FlushInterval: time.Second, MemoryRows: 10, SpillDir: t.TempDir(), SpillMaxBytes: 1 << 20, Writers: 2, MemoryBytes: 64 << 20, LeftoverMaxAge: time.Hour})
	b := &batch{ID: [16]byte{1}, Rows: rows(0, 10)}
	for range 2 { // the second stands for a retry after a lost COMMIT answer
		if err := s.write(t.Context(), b); err != nil {
			t.Fatal(err)
		}
	}
	checkTable(t, f, 10)
	if st := s.Stats(); st.Written != 10 {
		t.Fatalf("written %d, want 10", st.Written)
	}
}

func TestShutdownSpillsAndNextRunWrites(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	cfg := Config{BatchSize: 50, FlushInterval: 100 * time.Millisecond, MemoryRows: 1000, SpillDir: dir, SpillMaxBytes: 1 << 22, Writers: 2, MemoryBytes: 64 << 20, LeftoverMaxAge: time.Hour}
	first := newSink(t, f, cfg)
	stop := run(t, first)
	if err := f.pg.Stop(); err != nil {
		t.Fatal(err)
	}
	first.Add(rows(0, 120)...)
	stop() // PostgreSQL is down: the rows go to disk
	first.Add(rows(120, 5)...)
	if st := first.Stats(); st.Pending != 125 || st.Written != 0 {
		t.Fatalf("after shutdown: %+v, want 125 pending on disk", st)
	}

	if err := f.pg.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	second := newSink(t, f, cfg)
	if st := second.Stats(); st.Pending != 125 {
		t.Fatalf("next run found %+v, want 125 pending", st)
	}
	run(t, second)
	waitWritten(t, second, 125, 30*time.Second)
	checkTable(t, f, 125)
}

func TestRowsBeyondEveryLimitAreDroppedAndCounted(t *testing.T) {
	f := newFixture(t)
	s := newSink(t, f, Config{BatchSize: 10, FlushInterval: time.Second, MemoryRows: 20, SpillDir: t.TempDir(), SpillMaxBytes: 8 << 10, Writers: 2, MemoryBytes: 64 << 20, LeftoverMaxAge: time.Hour})
	if err := f.pg.Stop(); err != nil {
		t.Fatal(err)
	}
	run(t, s)
	s.Add(rows(0, 200)...)
	st := s.Stats()
	if st.Dropped == 0 || st.Spilled == 0 || st.Dropped+st.Pending != 200 {
		t.Fatalf("%+v: want some spilled, the rest beyond 8 KiB dropped, dropped + pending = 200", st)
	}
}
