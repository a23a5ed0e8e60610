package proxylogs_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nemesis-ml/nemesis/extproc/logquery"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

const (
	tableRows = 5_000_000
	requests  = 200 // per kind of page
	spacing   = 100 * time.Millisecond
)

// BenchmarkQuery: GET /proxy/logs pages of 100 on five million rows
// spread over six days, each filter against an unfiltered newest-first
// page, p50 and p99 over the HTTP handler (query, scan, JSON).
func BenchmarkQuery(b *testing.B) {
	_, dbURL := testenv.Database(b)
	fill(b, dbURL)
	pool := openPool(b, dbURL)
	h, err := logquery.New(pool, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(h)
	b.Cleanup(srv.Close)
	now := time.Now().UTC()
	span := time.Duration(tableRows) * spacing
	rng := rand.New(rand.NewPCG(1, 2))
	// A random end point inside the table, so pages start all over it.
	until := func() string {
		return url.QueryEscape(now.Add(-time.Duration(rng.Int64N(int64(span)))).Format(time.RFC3339Nano))
	}
	kinds := []struct {
		name  string
		query func() string
	}{
		{"environment=staging&status=5xx", func() string { return "environment=staging&status=5xx&until=" + until() }},
		{"method=POST&min_latency_ms=100", func() string { return "method=POST&min_latency_ms=100&until=" + until() }},
		{"client_ip=192.0.2.0/28&status=404", func() string { return "client_ip=192.0.2.0%2F28&status=404&until=" + until() }},
		{"target_url=http://10.1.2.5:8080/*", func() string {
			return "target_url=" + url.QueryEscape("http://10.1.2.5:8080/*") + "&until=" + until()
		}},
		{"since+until one hour&status=500", func() string {
			end := now.Add(-time.Duration(rng.Int64N(int64(span - time.Hour))))
			return "status=500&since=" + url.QueryEscape(end.Add(-time.Hour).Format(time.RFC3339Nano)) +
				"&until=" + url.QueryEscape(end.Format(time.RFC3339Nano))
		}},
	}
	for range b.N {
		base := measurePages(b, srv.URL, func() string { return "" })
		b.Logf("%-36s p50 %6.2f ms  p99 %6.2f ms  (baseline)", "unfiltered newest first", ms(pct(base, 50)), ms(pct(base, 99)))
		worst := time.Duration(0)
		for _, k := range kinds {
			d := measurePages(b, srv.URL, k.query)
			worst = max(worst, pct(d, 99))
			b.Logf("%-36s p50 %6.2f ms  p99 %6.2f ms  p99/baseline %.1f", k.name, ms(pct(d, 50)), ms(pct(d, 99)),
				float64(pct(d, 99))/float64(pct(base, 99)))
		}
		b.ReportMetric(ms(worst), "worst-filtered-p99-ms")
		b.ReportMetric(float64(worst)/float64(pct(base, 99)), "worst-p99/baseline-p99")
		b.ReportMetric(0, "ns/op")
		b.Logf("worst filtered p99 %.2f ms (goal < 50 ms) on %d rows", ms(worst), tableRows)
	}
}

// measurePages asks for requests pages of 100, each with query(), and
// returns their durations, sorted.
func measurePages(b *testing.B, base string, query func() string) []time.Duration {
	c := &http.Client{Timeout: 30 * time.Second}
	out := make([]time.Duration, 0, requests)
	for range requests {
		u := base + "/proxy/logs?limit=100&" + query()
		start := time.Now()
		resp, err := c.Get(u)
		if err != nil {
			b.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		out = append(out, time.Since(start))
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("GET %s: %d %s", u, resp.StatusCode, body)
		}
	}
	slices.Sort(out)
	return out
}

// fill writes tableRows rows 100 ms apart ending now, with the indexes
// dropped during the insert and rebuilt after, as a restore would.
func fill(b *testing.B, dbURL string) {
	start := time.Now()
	ctx := context.Background()
	pool := openPool(b, dbURL)
	rows, err := pool.Query(ctx, `SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'proxy_logs' AND indexname <> 'proxy_logs_pkey'`)
	if err != nil {
		b.Fatal(err)
	}
	defs := map[string]string{}
	for rows.Next() {
		var name, def string
		if err := rows.Scan(&name, &def); err != nil {
			b.Fatal(err)
		}
		defs[name] = def
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
	exec := func(sql string) {
		if _, err := pool.Exec(ctx, sql); err != nil {
			b.Fatalf("%s: %v", sql, err)
		}
	}
	for name := range defs {
		exec("DROP INDEX " + name)
	}
	exec(fmt.Sprintf(`INSERT INTO proxy_logs (timestamp, client_ip, target_url, http_method, response_status,
		latency_ms, environment, route, upstream_host, response_flags, request_id, bytes_received, bytes_sent)
	SELECT (now() AT TIME ZONE 'UTC') - i * interval '%d microseconds',
		('192.0.2.' || (i %% 250))::inet,
		'http://10.1.' || (i %% 3) || '.' || (i %% 7) || ':8080/models/model-' || (i %% 3) || '/predict',
		(ARRAY['GET','POST','POST','PUT'])[i %% 4 + 1],
		(ARRAY[200,200,200,200,200,200,200,404,500,503])[i %% 10 + 1],
		(i::bigint * 7919) %% 150,
		(ARRAY['production','production','production','staging'])[(i / 7) %% 4 + 1],
		'ml/model-' || (i %% 3), '10.1.' || (i %% 3) || '.' || (i %% 7) || ':8080',
		CASE WHEN i %% 10 = 9 THEN 'UO' ELSE '' END, md5(i::text), 900, 180
	FROM generate_series(1, %d) AS i`, spacing.Microseconds(), tableRows))
	for _, def := range defs {
		exec(def)
	}
	exec("VACUUM ANALYZE proxy_logs")
	b.Logf("filled %d rows and rebuilt %d indexes in %s", tableRows, len(defs), time.Since(start).Round(time.Second))
}

func pct(sorted []time.Duration, p int) time.Duration {
	return sorted[(len(sorted)-1)*p/100]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
