package console

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/nemesis-ml/nemesis/extproc/logquery"
	"github.com/nemesis-ml/nemesis/internal/httpjson"
)

// summarySpan bounds a summary without `since`, and summaryRows any
// summary: the charts aggregate rows (any filter of /proxy/logs, which
// rollups cannot answer), so they take the newest matching ones only, as
// an index scan in page order.
const (
	summarySpan = 15 * time.Minute
	summaryRows = 2_000
)

// latencyEdges are the histogram's bucket bounds in milliseconds.
var latencyEdges = []int{10, 25, 50, 100, 250, 500, 1000, 2500}

// Summary is the filtered requests as a latency histogram and a rate.
type Summary struct {
	// Since is the start of the rows summed: the query's, or summarySpan
	// ago when it has none. Rows is how many were summed: at most
	// summaryRows, the newest.
	Since     time.Time `json:"since"`
	Rows      int64     `json:"rows"`
	Latency   []Bucket  `json:"latency"`
	PerSecond []Rate    `json:"per_second"`
}

// Bucket counts requests whose latency is in [From, To) ms; To 0 is open.
type Bucket struct {
	From  int   `json:"from_ms"`
	To    int   `json:"to_ms"`
	Count int64 `json:"count"`
}

// Rate is how many requests started in the second from Time.
type Rate struct {
	Time  time.Time `json:"time"`
	Count int64     `json:"count"`
}

func (c *Console) summary(ctx context.Context, q logquery.Query) (*Summary, error) {
	q.After = nil
	if q.Since.IsZero() {
		q.Since = time.Now().UTC().Add(-summarySpan).Truncate(time.Second)
	}
	where, args := q.Where()
	s := &Summary{Since: q.Since, Latency: make([]Bucket, len(latencyEdges)+1), PerSecond: []Rate{}}
	for i := range s.Latency {
		if i > 0 {
			s.Latency[i].From = latencyEdges[i-1]
		}
		if i < len(latencyEdges) {
			s.Latency[i].To = latencyEdges[i]
		}
	}
	edges := make([]string, len(latencyEdges))
	for i, e := range latencyEdges {
		edges[i] = fmt.Sprint(e)
	}
	newest := fmt.Sprintf(`(SELECT timestamp, latency_ms FROM proxy_logs WHERE %s ORDER BY timestamp DESC, id DESC LIMIT %d) AS newest`, where, summaryRows)
	rows, err := c.cfg.Pool.Query(ctx, `SELECT coalesce(width_bucket(latency_ms, ARRAY[`+strings.Join(edges, ",")+`]), -1), count(*)
		FROM `+newest+` GROUP BY 1`, args...)
	if err != nil {
		return nil, fmt.Errorf("summing latencies: %w", err)
	}
	for rows.Next() {
		var b int
		var n int64
		if err := rows.Scan(&b, &n); err != nil {
			rows.Close()
			return nil, fmt.Errorf("summing latencies: %w", err)
		}
		s.Rows += n
		if b >= 0 {
			s.Latency[b].Count = n
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("summing latencies: %w", err)
	}
	// The newest 300 seconds that had requests, oldest first.
	rows, err = c.cfg.Pool.Query(ctx, `SELECT second, n FROM (
		SELECT date_trunc('second', timestamp) AS second, count(*) AS n FROM `+newest+`
		GROUP BY 1 ORDER BY 1 DESC LIMIT 300) AS recent ORDER BY second`, args...)
	if err != nil {
		return nil, fmt.Errorf("counting requests per second: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r Rate
		if err := rows.Scan(&r.Time, &r.Count); err != nil {
			return nil, fmt.Errorf("counting requests per second: %w", err)
		}
		r.Time = r.Time.UTC()
		s.PerSecond = append(s.PerSecond, r)
	}
	return s, rows.Err()
}

func (c *Console) summaryJSON(w http.ResponseWriter, r *http.Request) {
	q, err := logquery.Parse(r.URL.Query())
	if err != nil {
		httpjson.WriteBadRequest(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	s, err := c.summary(ctx, q)
	if err != nil {
		c.unavailable(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, s)
}
