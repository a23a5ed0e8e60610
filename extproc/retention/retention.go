// Package retention deletes proxy_logs rows older than a configured age in
// small batches, each its own short transaction, so writers never wait on
// a long lock. (Dropping time partitions would be cheaper still, but the
// seed's proxy_logs has a primary key on id alone, which a partitioned
// table cannot have.)
package retention

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// Config says what goes and how often to look.
type Config struct {
	MaxAge    time.Duration // rows whose timestamp is older go
	Interval  time.Duration // between passes
	BatchSize int           // rows per DELETE
}

// Retention runs the deletes.
type Retention struct {
	pool    *pgxpool.Pool
	cfg     Config
	log     *slog.Logger
	deleted prometheus.Counter
}

// New returns a retention whose counter of deleted rows is registered in reg.
func New(pool *pgxpool.Pool, cfg Config, reg prometheus.Registerer, log *slog.Logger) (*Retention, error) {
	if cfg.MaxAge <= 0 || cfg.Interval <= 0 || cfg.BatchSize < 1 {
		return nil, fmt.Errorf("proxy log retention: age, interval and batch size must be positive")
	}
	r := &Retention{pool: pool, cfg: cfg, log: log, deleted: prometheus.NewCounter(prometheus.CounterOpts{
		Name: "nemesis_proxy_logs_rows_deleted_total", Help: "Proxy log rows deleted for being older than the retention age.",
	})}
	if err := reg.Register(r.deleted); err != nil {
		return nil, fmt.Errorf("registering retention counter: %w", err)
	}
	return r, nil
}

// Run deletes old rows now and every interval until ctx ends. A failed pass
// (PostgreSQL away) is logged and tried again at the next interval.
func (r *Retention) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		n, err := r.Pass(ctx, time.Now().Add(-r.cfg.MaxAge))
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			r.log.Warn("deleting old proxy logs", "deleted", n, "err", err)
		case n > 0:
			r.log.Info("deleted old proxy logs", "rows", n, "max_age", r.cfg.MaxAge)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Pass deletes every row older than cutoff, a batch at a time, and the
// batch markers of the same age, and returns how many rows went.
func (r *Retention) Pass(ctx context.Context, cutoff time.Time) (int64, error) {
	cutoff = cutoff.UTC()
	var total int64
	for {
		n, err := r.exec(ctx, `DELETE FROM proxy_logs WHERE id IN (
			SELECT id FROM proxy_logs WHERE timestamp < $1 ORDER BY timestamp LIMIT $2)`, cutoff, r.cfg.BatchSize)
		total += n
		r.deleted.Add(float64(n))
		if err != nil {
			return total, fmt.Errorf("deleting proxy logs before %s: %w", cutoff.Format(time.RFC3339), err)
		}
		if n < int64(r.cfg.BatchSize) {
			break
		}
	}
	// A marker only has to outlive the retries of its batch; one as old as
	// the rows it guarded is safe to drop.
	if _, err := r.exec(ctx, `DELETE FROM proxy_log_batches WHERE written_at < $1`, cutoff, nil); err != nil {
		return total, fmt.Errorf("deleting proxy log batch markers: %w", err)
	}
	// Rejected rows are kept as long as written ones.
	if _, err := r.exec(ctx, `DELETE FROM proxy_logs_rejected WHERE rejected_at < $1`, cutoff, nil); err != nil {
		return total, fmt.Errorf("deleting rejected proxy logs: %w", err)
	}
	return total, nil
}

func (r *Retention) exec(ctx context.Context, sql string, cutoff time.Time, limit any) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	args := []any{cutoff}
	if limit != nil {
		args = append(args, limit)
	}
	tag, err := r.pool.Exec(ctx, sql, args...)
	return tag.RowsAffected(), err
}
