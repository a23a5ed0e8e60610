package logquery

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

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

// Handler answers GET /proxy/logs from pool.
type Handler struct {
	pool *pgxpool.Pool
	log  *slog.Logger
}

// New returns the handler.
func New(pool *pgxpool.Pool, log *slog.Logger) *Handler {
	return &Handler{pool: pool, log: log}
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q, err := Parse(r.URL.Query())
	if err != nil {
		httpjson.WriteBadRequest(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	logs, err := h.page(ctx, q)
	if err != nil {
		h.log.Error("querying proxy logs", "query", r.URL.RawQuery, "err", err)
		httpjson.WriteError(w, http.StatusServiceUnavailable, "", "database unavailable")
		return
	}
	if len(logs) > q.Limit {
		logs = logs[:q.Limit]
		last := logs[len(logs)-1]
		next := r.URL.Query()
		next.Set("cursor", Cursor{Timestamp: last.Timestamp, ID: last.ID}.Encode())
		w.Header().Set("Link", "<"+r.URL.Path+"?"+next.Encode()+`>; rel="next"`)
	}
	httpjson.Write(w, http.StatusOK, logs)
}

func (h *Handler) page(ctx context.Context, q Query) ([]Log, error) {
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
