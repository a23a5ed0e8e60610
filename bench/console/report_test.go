package console_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nemesis-ml/nemesis/console"
	"github.com/nemesis-ml/nemesis/internal/database"
	"github.com/nemesis-ml/nemesis/internal/httpauth"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

// The report's load: 5,000,000 proxy-log rows over the last 60 days (a
// month and the month before it, 1 in 200 an activator 503), a month of
// decisions (each autoscaler one every 4 minutes) and a settings version a
// day.
const (
	reportLogRows     = 5_000_000
	reportDays        = 60
	reportAutoscalers = 20
	decisionEvery     = 4 * time.Minute
	reportAsks        = 30
	scanAsks          = 3
)

// BenchmarkReport asks GET /reports for the last 30 days (against the 30
// before) reportAsks times, one at a time, and compares its p99 with the
// baseline the rollups replace, measured in the same run: the month's
// requests, errors and latency percentiles per route summed straight from
// proxy_logs.
//
//	go test -run '^$' -bench Report -benchtime 1x ./bench/console
func BenchmarkReport(b *testing.B) {
	_, dbURL := testenv.Database(b)
	ctx := context.Background()
	start := time.Now()
	// In chunks: the rollup trigger sums each statement's rows at once.
	const chunk = 500_000
	for from := 1; from <= reportLogRows; from += chunk {
		testenv.Exec(b, dbURL, `INSERT INTO proxy_logs (timestamp, client_ip, target_url, http_method, response_status, latency_ms, environment, route, upstream_host)
			SELECT now() AT TIME ZONE 'UTC' - (i * $2::float8 / $3 || ' seconds')::interval, '10.0.0.1', 'http://models/m' || (i % $1) || '/predict',
				'POST', CASE WHEN i % 50 = 0 THEN 503 ELSE 200 END, i % 300, 'production', 'bench/m' || (i % $1),
				CASE WHEN i % 200 = 0 THEN '' ELSE '10.1.0.1:8080' END
			FROM generate_series($4::int, $5::int) AS i`, reportAutoscalers, reportDays*86400, reportLogRows, from, min(from+chunk-1, reportLogRows))
	}
	decisionsN := int(30 * 24 * time.Hour / decisionEvery * reportAutoscalers)
	testenv.Exec(b, dbURL, `INSERT INTO scaling_decisions (namespace, name, time, from_replicas, to_replicas, action, rule, reason)
		SELECT 'bench', 'm' || (i % $1), now() - (i * $2::float8 / $3 || ' seconds')::interval, i % 4, (i + 1) % 4,
			'INCREASE_INSTANCES', 'cpu-high', 'bench'
		FROM generate_series(1, $3) AS i`, reportAutoscalers, 30*86400, decisionsN)
	testenv.Exec(b, dbURL, `INSERT INTO loadbalancer_settings (environment, policy, max_connections, timeout_seconds, updated_at)
		SELECT 'production', 'round_robin', 100 + i, 10, now() AT TIME ZONE 'UTC' - (i || ' days')::interval
		FROM generate_series(1, $1) AS i`, reportDays)
	testenv.Exec(b, dbURL, `VACUUM ANALYZE`)
	b.Logf("seeded %d proxy-log rows and %d decisions in %s", reportLogRows, decisionsN, time.Since(start).Round(time.Second))

	pool, err := database.Open(ctx, dbURL)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	c, err := console.New(console.Config{Pool: pool, Auth: httpauth.Open(), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	// The rejected held requests come from the partial index alone.
	rows, err := pool.Query(ctx, `EXPLAIN SELECT environment, route, count(*) FROM proxy_logs
		WHERE timestamp >= $1 AND timestamp < $2 AND response_status = 503 AND upstream_host = '' AND response_flags = ''
		GROUP BY environment, route`, time.Now().Add(-30*24*time.Hour), time.Now())
	if err != nil {
		b.Fatal(err)
	}
	plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		b.Fatal(err)
	}
	if !strings.Contains(strings.Join(plan, "\n"), "idx_proxy_logs_activator_rejects") {
		b.Fatalf("counting rejected held requests does not use idx_proxy_logs_activator_rejects:\n%s", strings.Join(plan, "\n"))
	}
	mux := http.NewServeMux()
	c.Register(mux)
	srv := httptest.NewServer(mux)
	b.Cleanup(srv.Close)

	for range b.N {
		until := time.Now().UTC()
		since := until.Add(-30 * 24 * time.Hour)
		url := fmt.Sprintf("%s/reports?since=%s&until=%s", srv.URL, since.Format(time.RFC3339), until.Format(time.RFC3339))
		var report []time.Duration
		for range reportAsks {
			t0 := time.Now()
			resp, err := http.Get(url)
			if err != nil {
				b.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatalf("GET /reports: %d", resp.StatusCode)
			}
			report = append(report, time.Since(t0))
		}
		var scan []time.Duration
		for range scanAsks {
			t0 := time.Now()
			testenv.Exec(b, dbURL, `SELECT route, count(*), count(*) FILTER (WHERE response_status >= 500),
					percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY latency_ms)
				FROM proxy_logs WHERE timestamp >= $1 AND timestamp < $2 GROUP BY route`, since, until)
			scan = append(scan, time.Since(t0))
		}
		slices.Sort(report)
		slices.Sort(scan)
		b.Logf("%-44s p50 %8.1f ms  p99 %8.1f ms  (baseline, %d runs)", "month from proxy_logs (SQL, full scan)", ms(pct(scan, 50)), ms(pct(scan, 99)), scanAsks)
		b.Logf("%-44s p50 %8.1f ms  p99 %8.1f ms  p99/baseline %.3f (goal p99 < 1 s)", "GET /reports, 30 days against 30 before", ms(pct(report, 50)), ms(pct(report, 99)),
			float64(pct(report, 99))/float64(pct(scan, 99)))
		b.ReportMetric(ms(pct(report, 99)), "report-p99-ms")
		b.ReportMetric(float64(pct(report, 99))/float64(pct(scan, 99)), "report-p99/scan-p99")
		b.ReportMetric(0, "ns/op")
	}
}
