package retention

import (
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nemesis-ml/nemesis/internal/database"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

func TestMain(m *testing.M) { testenv.Run(m) }

func TestPassDeletesOnlyOldRowsInBatches(t *testing.T) {
	_, url := testenv.Database(t)
	// 250 rows a day old and 40 from the last hour, and batch markers of both ages.
	testenv.Exec(t, url, `INSERT INTO proxy_logs (timestamp, client_ip, target_url, http_method, response_status)
		SELECT (now() AT TIME ZONE 'UTC') - interval '1 day' - i * interval '1 second', '10.0.0.1', 'http://a/old', 'GET', 200
		FROM generate_series(1, 250) i`)
	testenv.Exec(t, url, `INSERT INTO proxy_logs (timestamp, client_ip, target_url, http_method, response_status)
		SELECT (now() AT TIME ZONE 'UTC') - i * interval '1 minute', '10.0.0.1', 'http://a/new', 'GET', 200
		FROM generate_series(1, 40) i`)
	testenv.Exec(t, url, `INSERT INTO proxy_log_batches (id, written_at) VALUES
		(gen_random_uuid(), (now() AT TIME ZONE 'UTC') - interval '2 days'), (gen_random_uuid(), now() AT TIME ZONE 'UTC')`)
	testenv.Exec(t, url, `INSERT INTO proxy_logs_rejected (rejected_at, reason, error, row_data) VALUES
		((now() AT TIME ZONE 'UTC') - interval '2 days', 'text', 'old', '{}'), (now() AT TIME ZONE 'UTC', 'text', 'new', '{}')`)

	pool, err := database.Open(testenv.Context(t, 10*time.Second), url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	r, err := New(pool, Config{MaxAge: 12 * time.Hour, Interval: time.Hour, BatchSize: 100}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	n, err := r.Pass(t.Context(), time.Now().Add(-12*time.Hour))
	if err != nil || n != 250 {
		t.Fatalf("pass deleted %d (%v), want 250", n, err)
	}
	var old, fresh, markers int
	var rejected string
	testenv.QueryRow(t, url, `SELECT count(*) FILTER (WHERE target_url = 'http://a/old'), count(*) FILTER (WHERE target_url = 'http://a/new'),
		(SELECT count(*) FROM proxy_log_batches), (SELECT string_agg(error, ',') FROM proxy_logs_rejected) FROM proxy_logs`, &old, &fresh, &markers, &rejected)
	if old != 0 || fresh != 40 || markers != 1 || rejected != "new" {
		t.Fatalf("after the pass: %d old rows, %d new, %d markers, rejected %q; want 0, 40, 1, new", old, fresh, markers, rejected)
	}
	if got := testutil.ToFloat64(r.deleted); got != 250 {
		t.Fatalf("deleted counter %v, want 250", got)
	}
}
