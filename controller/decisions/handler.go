package decisions

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nemesis-ml/nemesis/internal/httpjson"
)

// Handler answers GET /autoscalers/{namespace}/{name}/decisions.
type Handler struct {
	pool *pgxpool.Pool
	log  *slog.Logger
}

// NewHandler returns the handler reading from pool.
func NewHandler(pool *pgxpool.Pool, log *slog.Logger) *Handler {
	return &Handler{pool: pool, log: log}
}

// Pattern is the route the handler expects its path values from.
const Pattern = "GET /autoscalers/{namespace}/{name}/decisions"

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q, err := Parse(r.PathValue("namespace"), r.PathValue("name"), r.URL.Query())
	if err != nil {
		httpjson.WriteBadRequest(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	page, next, err := h.Page(ctx, q)
	if err != nil {
		h.log.Error("querying decisions", "namespace", q.Namespace, "name", q.Name, "err", err)
		httpjson.WriteError(w, http.StatusServiceUnavailable, "", "database unavailable")
		return
	}
	if next != nil {
		v := r.URL.Query()
		v.Set("cursor", next.Encode())
		w.Header().Set("Link", "<"+r.URL.Path+"?"+v.Encode()+`>; rel="next"`)
	}
	httpjson.Write(w, http.StatusOK, page)
}

// Page returns one page of records, and the cursor of the next when one
// follows.
func (h *Handler) Page(ctx context.Context, q Query) ([]Record, *Cursor, error) {
	sql, args := q.SQL()
	rows, err := h.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	out := make([]Record, 0, q.Limit+1)
	for rows.Next() {
		var r Record
		if err := rows.Scan(&r.ID, &r.Namespace, &r.Name, &r.Time, &r.From, &r.To, &r.Action, &r.Rule, &r.Reason,
			&r.LimitedBy, &r.DryRun, &r.Inputs, &r.Wake); err != nil {
			return nil, nil, err
		}
		r.Time = r.Time.UTC()
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	if len(out) <= q.Limit {
		return out, nil, nil
	}
	out = out[:q.Limit]
	last := out[len(out)-1]
	return out, &Cursor{Time: last.Time, ID: last.ID}, nil
}
