package logsink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// write copies b into proxy_logs and its rejected rows into
// proxy_logs_rejected, in one transaction with its marker; a batch whose
// marker is already there was committed before and is skipped. Rows
// PostgreSQL refuses join the rejected rows; any other failure fails the
// write, to be retried.
func (s *Sink) write(ctx context.Context, b *batch) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var copied int64
	var refused []Rejected
	var lost int
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		copied, refused, lost = 0, nil, 0
		tag, err := tx.Exec(ctx, `INSERT INTO proxy_log_batches (id) VALUES ($1) ON CONFLICT DO NOTHING`, b.ID)
		if err != nil {
			return fmt.Errorf("marking batch: %w", err)
		}
		if tag.RowsAffected() == 0 {
			s.log.Info("proxy log batch was already written; skipped", "batch", b.ID, "rows", b.count())
			return nil
		}
		if copied, refused, err = copyIsolating(ctx, tx, b.Rows); err != nil {
			return fmt.Errorf("copying rows: %w", err)
		}
		if lost, err = copyRejected(ctx, tx, append(slices.Clip(b.Rejected), refused...)); err != nil {
			return fmt.Errorf("copying rejected rows: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("writing batch %s of %d rows: %w", b.ID, b.count(), err)
	}
	s.written.Add(copied)
	s.noteWrite(b.Rows, time.Now())
	for _, rj := range refused {
		s.reject(rj, b.ID.String())
	}
	if lost > 0 {
		s.dropped.Add(int64(lost))
		s.log.Error("PostgreSQL refused rejected proxy log rows too; they are dropped", "batch", b.ID, "rows", lost)
	}
	return nil
}

// copyIsolating copies rows under a savepoint. When PostgreSQL refuses the
// data, it halves the rows until it has the ones refused, which it returns
// with PostgreSQL's error; the rest are copied.
func copyIsolating(ctx context.Context, tx pgx.Tx, rows []Row) (int64, []Rejected, error) {
	if len(rows) == 0 {
		return 0, nil, nil
	}
	err := savepoint(ctx, tx, func(sp pgx.Tx) error {
		_, err := sp.CopyFrom(ctx, pgx.Identifier{"proxy_logs"}, Columns,
			pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) { return rows[i].Values(), nil }))
		return err
	})
	switch {
	case err == nil:
		return int64(len(rows)), nil, nil
	case !IsDataError(err):
		return 0, nil, err
	case len(rows) == 1:
		return 0, []Rejected{{Row: rows[0], Reason: ReasonDatabase, Error: err.Error()}}, nil
	}
	half := len(rows) / 2
	a, ra, err := copyIsolating(ctx, tx, rows[:half])
	if err != nil {
		return 0, nil, err
	}
	b, rb, err := copyIsolating(ctx, tx, rows[half:])
	if err != nil {
		return 0, nil, err
	}
	return a + b, append(ra, rb...), nil
}

// copyRejected copies rejected rows into proxy_logs_rejected; when
// PostgreSQL refuses them as well they are left out, and counted.
func copyRejected(ctx context.Context, tx pgx.Tx, rejected []Rejected) (lost int, err error) {
	if len(rejected) == 0 {
		return 0, nil
	}
	values := make([][]any, len(rejected))
	for i, rj := range rejected {
		raw, err := json.Marshal(rj.Row)
		if err != nil {
			return 0, fmt.Errorf("encoding a rejected row: %w", err)
		}
		values[i] = []any{rj.Reason, rj.Error, string(raw)}
	}
	err = savepoint(ctx, tx, func(sp pgx.Tx) error {
		_, err := sp.CopyFrom(ctx, pgx.Identifier{"proxy_logs_rejected"}, []string{"reason", "error", "row_data"},
			pgx.CopyFromRows(values))
		return err
	})
	if IsDataError(err) {
		return len(rejected), nil
	}
	return 0, err
}

// savepoint runs f in a nested transaction: its failure rolls back f's
// work only.
func savepoint(ctx context.Context, tx pgx.Tx, f func(pgx.Tx) error) error {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return err
	}
	if err := f(sp); err != nil {
		return errors.Join(err, sp.Rollback(ctx))
	}
	return sp.Commit(ctx)
}

// IsDataError reports whether PostgreSQL refused err's statement for its
// data (SQLSTATE classes 22 data exception, 23 integrity constraint
// violation, 54 program limit exceeded such as an oversized index entry):
// sending the same data again fails again. Anything else (connection lost,
// server shutting down, a timeout) may pass when retried.
func IsDataError(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || len(pgErr.Code) < 2 {
		return false
	}
	switch pgErr.Code[:2] {
	case "22", "23", "54":
		return true
	}
	return false
}
