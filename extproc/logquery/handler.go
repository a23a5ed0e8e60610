package logquery

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nemesis-ml/nemesis/internal/httpjson"
)

// Log is one row of the answer: the seed's fields, then the added ones.
type Log struct {
	ID             int64      `json:"id"`
	Timestamp      time.Time  `json:"timestamp"`
	ClientIP       netip.Addr `json:"client_ip"`
	TargetURL      string     `json:"target_url"`
	HTTPMethod     string     `json:"http_method"`
	ResponseStatus int32      `json:"response_status"`
	LatencyMS      *int32     `json:"latency_ms"`
	Environment    string     `json:"environment"`
	Route          string     `json:"route"`
	UpstreamHost   string     `json:"upstream_host"`
	ResponseFlags  string     `json:"response_flags"`
	RequestID      string     `json:"request_id"`
	BytesReceived  int64      `json:"bytes_received"`
	BytesSent      int64      `json:"bytes_sent"`
}

var columns = []string{
	"id", "timestamp", "client_ip", "target_url", "http_method", "response_status", "latency_ms",
	"environment", "route", "upstream_host", "response_flags", "request_id", "bytes_received", "bytes_sent",
}

func (l *Log) fields() []any {
	return []any{&l.ID, &l.Timestamp, &l.ClientIP, &l.TargetURL, &l.HTTPMethod, &l.ResponseStatus, &l.LatencyMS,
		&l.Environment, &l.Route, &l.UpstreamHost, &l.ResponseFlags, &l.RequestID, &l.BytesReceived, &l.BytesSent}
}

// Timeout bounds one query, waiting for a connection included; the query
// pool's statement_timeout bounds it in PostgreSQL as well.
const Timeout = 10 * time.Second

// Handler answers GET /proxy/logs from pool, which should be its own: a
// burst of slow queries then waits for that pool's connections, not for
// those of the log writers or of /readyz.
type Handler struct {
	pool    *pgxpool.Pool
	log     *slog.Logger
	answers *prometheus.CounterVec
}

// New returns the handler, its counter registered in reg.
func New(pool *pgxpool.Pool, log *slog.Logger, reg prometheus.Registerer) (*Handler, error) {
	h := &Handler{pool: pool, log: log, answers: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nemesis_proxy_logs_queries_total", Help: "GET /proxy/logs answers by status code.",
	}, []string{"code"})}
	if err := reg.Register(h.answers); err != nil {
		return nil, fmt.Errorf("registering proxy log query counter: %w", err)
	}
	return h, nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var q Query
	values, err := httpjson.Query(r)
	if err == nil {
		q, err = Parse(values)
	}
	if err != nil {
		h.log.Info("refused a proxy log query", "query", r.URL.RawQuery, "err", err)
		h.answers.WithLabelValues("400").Inc()
		httpjson.WriteBadRequest(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), Timeout)
	defer cancel()
	logs, err := h.Page(ctx, q)
	if err != nil {
		h.log.Error("querying proxy logs", "query", r.URL.RawQuery, "err", err)
		h.answers.WithLabelValues("503").Inc()
		w.Header().Set("Retry-After", "1")
		httpjson.WriteError(w, http.StatusServiceUnavailable, "", "proxy log query failed or timed out; try a narrower one: "+err.Error())
		return
	}
	h.answers.WithLabelValues("200").Inc()
	if len(logs) > q.Limit {
		logs = logs[:q.Limit]
		last := logs[len(logs)-1]
		next := values
		next.Set("cursor", Cursor{Time: last.Timestamp, ID: last.ID}.Encode())
		w.Header().Set("Link", "<"+r.URL.Path+"?"+next.Encode()+`>; rel="next"`)
	}
	httpjson.Write(w, http.StatusOK, logs)
}

// Page returns the rows of q's page, plus the first row of the next page
// when one follows (the console and the export page through it too).
func (h *Handler) Page(ctx context.Context, q Query) ([]Log, error) {
	sql, args := q.SQL()
	rows, err := h.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	logs := make([]Log, 0, q.Limit+1)
	for rows.Next() {
		var l Log // fresh each row: pgx reuses pointers it scanned into
		if err := rows.Scan(l.fields()...); err != nil {
			return nil, err
		}
		l.Timestamp = l.Timestamp.UTC()
		logs = append(logs, l)
	}
	return logs, rows.Err()
}
