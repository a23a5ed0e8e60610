package decisions

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Retention deletes records older than MaxAge every Interval, in batches
// of 10,000 rows, each its own short transaction.
type Retention struct {
	Pool     *pgxpool.Pool
	MaxAge   time.Duration
	Interval time.Duration
	Log      *slog.Logger
}

// Run deletes old records now and every interval until ctx ends; a failed
// pass is logged and tried at the next.
func (r Retention) Run(ctx context.Context) error {
	t := time.NewTicker(r.Interval)
	defer t.Stop()
	for {
		n, err := r.Pass(ctx, time.Now().Add(-r.MaxAge))
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			r.Log.Warn("deleting old decision records", "deleted", n, "err", err)
		case n > 0:
			r.Log.Info("deleted old decision records", "rows", n, "max_age", r.MaxAge)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Pass deletes every record older than cutoff and returns how many went.
func (r Retention) Pass(ctx context.Context, cutoff time.Time) (int64, error) {
	var total int64
	for {
		tag, err := r.Pool.Exec(ctx, `DELETE FROM scaling_decisions WHERE id IN
			(SELECT id FROM scaling_decisions WHERE time < $1 LIMIT 10000)`, cutoff)
		if err != nil {
			return total, fmt.Errorf("deleting decision records before %s: %w", cutoff.Format(time.RFC3339), err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < 10000 {
			return total, nil
		}
	}
}
