package logquery

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nemesis-ml/nemesis/internal/database"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

// TestEveryFilterIsAnIndexCondition fills proxy_logs with 200,000 rows in
// which each filtered value is rare, and checks with EXPLAIN that every
// filter /proxy/logs offers reads an index on its column, never the table
// in full or the whole timestamp index with the filter applied row by row.
func TestEveryFilterIsAnIndexCondition(t *testing.T) {
	_, dbURL := testenv.Database(t)
	testenv.Exec(t, dbURL, `INSERT INTO proxy_logs (timestamp, client_ip, target_url, http_method, response_status,
		latency_ms, environment, route)
		SELECT timestamp '2026-01-01' + i * interval '1 second',
			CASE WHEN i % 1009 = 0 THEN inet '192.0.2.7' ELSE inet '10.0.0.0' + (i % 60000) END,
			'http://10.1.0.1:8080/models/m/' || i,
			CASE WHEN i % 997 = 0 THEN 'TRACE' WHEN i % 2 = 0 THEN 'GET' ELSE 'POST' END,
			CASE WHEN i % 1000 = 0 THEN 503 WHEN i % 10 = 0 THEN 404 ELSE 200 END,
			CASE WHEN i % 1019 = 0 THEN 50000 ELSE i % 100 END,
			CASE WHEN i % 1021 = 0 THEN 'rare' ELSE 'production' END,
			CASE WHEN i % 1013 = 0 THEN 'ml/rare' ELSE 'ml/common' END
		FROM generate_series(1, 200000) i`)
	testenv.Exec(t, dbURL, `ANALYZE proxy_logs`)
	pool, err := database.Open(testenv.Context(t, 10*time.Second), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)

	for query, column := range map[string]string{
		"status=503":             "response_status",
		"status=5xx":             "response_status",
		"method=TRACE":           "http_method",
		"client_ip=192.0.2.7":    "client_ip",
		"client_ip=192.0.2.0/24": "client_ip",
		"route=ml/rare":          "route",
		"min_latency_ms=40000":   "latency_ms",
		"environment=rare":       "environment",
		"target_url=http://10.1.0.1:8080/models/m/77":           "target_url",
		"target_url=http://10.1.0.1:8080/models/m/777*":         "target_url",
		"since=2026-01-02T00:00:00Z&until=2026-01-02T00:10:00Z": "timestamp",
	} {
		t.Run(query, func(t *testing.T) {
			v, err := url.ParseQuery(query)
			if err != nil {
				t.Fatal(err)
			}
			q, err := Parse(v)
			if err != nil {
				t.Fatal(err)
			}
			sql, args := q.SQL()
			var raw string
			if err := pool.QueryRow(t.Context(), "EXPLAIN (FORMAT JSON) "+sql, args...).Scan(&raw); err != nil {
				t.Fatal(err)
			}
			var plans []struct{ Plan node }
			if err := json.Unmarshal([]byte(raw), &plans); err != nil {
				t.Fatal(err)
			}
			var conds []string
			var seq bool
			plans[0].Plan.walk(func(n node) {
				seq = seq || n.NodeType == "Seq Scan"
				conds = append(conds, n.IndexCond, n.RecheckCond)
			})
			if seq || !strings.Contains(strings.Join(conds, " "), column) {
				t.Fatalf("plan does not read an index on %s:\n%s", column, raw)
			}
		})
	}
}

type node struct {
	NodeType    string `json:"Node Type"`
	IndexCond   string `json:"Index Cond"`
	RecheckCond string `json:"Recheck Cond"`
	Plans       []node `json:"Plans"`
}

func (n node) walk(f func(node)) {
	f(n)
	for _, c := range n.Plans {
		c.walk(f)
	}
}
