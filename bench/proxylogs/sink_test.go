package proxylogs_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nemesis-ml/nemesis/extproc/logsink"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

const sinkRows = 500_000

// BenchmarkSink: rows per second through the sink (each row checked, the
// queue bounded in rows and bytes, batched COPY under a savepoint with its
// idempotency marker) against raw CopyFrom of the same rows in batches of
// the same size, into the migrated proxy_logs with all its indexes; and
// what the row checks alone cost, against the sink's time per row.
func BenchmarkSink(b *testing.B) {
	_, url := testenv.Database(b)
	pool := openPool(b, url)
	rows := sampleRows(sinkRows)
	cfg := logsink.DefaultConfig()
	// Capacity, not a burst: every row fits in memory, none is spilled.
	cfg.MemoryRows = sinkRows
	cfg.MemoryBytes = 1 << 30
	ctx := context.Background()
	for range b.N {
		truncate(b, url)
		start := time.Now()
		for i := 0; i < len(rows); i += cfg.BatchSize {
			batch := rows[i:min(i+cfg.BatchSize, len(rows))]
			if _, err := pool.CopyFrom(ctx, pgx.Identifier{"proxy_logs"}, logsink.Columns,
				pgx.CopyFromSlice(len(batch), func(j int) ([]any, error) { return batch[j].Values(), nil })); err != nil {
				b.Fatal(err)
			}
		}
		raw := float64(len(rows)) / time.Since(start).Seconds()

		truncate(b, url)
		cfg.SpillDir = b.TempDir()
		sink, err := logsink.New(pool, cfg, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- sink.Run(runCtx) }()
		start = time.Now()
		for i := 0; i < len(rows); i += 100 { // as Envoy's streams deliver them
			sink.Add(rows[i:min(i+100, len(rows))]...)
		}
		for sink.Stats().Written < int64(len(rows)) {
			time.Sleep(time.Millisecond)
		}
		through := float64(len(rows)) / time.Since(start).Seconds()
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		var n int
		testenv.QueryRow(b, url, `SELECT count(*) FROM proxy_logs`, &n)
		if n != len(rows) {
			b.Fatalf("proxy_logs has %d rows, want %d", n, len(rows))
		}
		start = time.Now()
		for i := range rows {
			r := rows[i]
			if _, rejected := r.Check(); rejected != nil {
				b.Fatalf("sample row %d rejected: %+v", i, rejected)
			}
		}
		check := time.Since(start).Seconds() / float64(len(rows))
		b.ReportMetric(through, "sink-rows/s")
		b.ReportMetric(through/raw, "ratio-to-raw-copy")
		b.ReportMetric(check*1e9, "check-ns/row")
		b.ReportMetric(0, "ns/op")
		b.Logf("%d rows: sink %.0f rows/s (goal >= 50000), raw CopyFrom %.0f rows/s, ratio %.3f; row checks %.0f ns a row, %.1f%% of the sink's time a row",
			len(rows), through, raw, through/raw, check*1e9, 100*check*through)
	}
}

func truncate(b *testing.B, url string) {
	testenv.Exec(b, url, `TRUNCATE proxy_logs, proxy_log_batches`)
}

// sampleRows are rows like a busy environment's: three routes, a few
// backends, mixed methods and statuses, one millisecond apart.
func sampleRows(n int) []logsink.Row {
	out := make([]logsink.Row, n)
	start := time.Now().Add(-time.Duration(n) * time.Millisecond).UTC()
	methods := []string{"GET", "POST", "POST", "PUT"}
	statuses := []int32{200, 200, 200, 200, 200, 200, 200, 404, 500, 503}
	for i := range out {
		latency := int32(i % 120)
		host := fmt.Sprintf("10.1.%d.%d:8080", i%3, i%7)
		out[i] = logsink.Row{
			Timestamp: start.Add(time.Duration(i) * time.Millisecond),
			ClientIP:  netip.AddrFrom4([4]byte{192, 0, 2, byte(i % 250)}),
			TargetURL: fmt.Sprintf("http://%s/models/model-%d/predict", host, i%3),
			Method:    methods[i%len(methods)], Status: statuses[i%len(statuses)], LatencyMS: &latency,
			Environment: "production", Route: fmt.Sprintf("ml/model-%d", i%3), UpstreamHost: host,
			RequestID: fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i), BytesReceived: 900, BytesSent: 180,
		}
	}
	return out
}
