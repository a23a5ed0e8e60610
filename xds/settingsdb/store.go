// Package settingsdb stores load-balancer settings in PostgreSQL's
// loadbalancer_settings and tells which environment changed (LISTEN/NOTIFY).
package settingsdb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nemesis-ml/nemesis/xds/settings"
)

// Channel is the PostgreSQL NOTIFY channel that carries the environment
// whose settings changed.
const Channel = "nemesis_loadbalancer_settings"

// Store reads and writes loadbalancer_settings. The newest row of an
// environment is its current setting; older rows are its history.
type Store struct {
	pool *pgxpool.Pool
}

// NewStore returns a store on pool.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// queryTimeout bounds every statement of the store: a stalled PostgreSQL
// fails a call (and the listener reconnects) instead of hanging it.
const queryTimeout = 10 * time.Second

const columns = `id, environment, policy::text, max_connections, timeout_seconds,
	retry_attempts, retry_budget_percent, stream_idle_timeout_seconds, updated_at`

func scan(row pgx.CollectableRow) (settings.Settings, error) {
	var s settings.Settings
	err := row.Scan(&s.Version, &s.Environment, &s.Policy, &s.MaxConnections, &s.TimeoutSeconds,
		&s.RetryAttempts, &s.RetryBudgetPercent, &s.StreamIdleTimeoutSeconds, &s.UpdatedAt)
	return s, err
}

// Current returns the environment's newest settings, or its defaults.
func (st *Store) Current(ctx context.Context, environment string) (settings.Settings, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	rows, _ := st.pool.Query(ctx, `SELECT `+columns+` FROM loadbalancer_settings
		WHERE environment = $1 ORDER BY id DESC LIMIT 1`, environment)
	s, err := pgx.CollectExactlyOneRow(rows, scan)
	if errors.Is(err, pgx.ErrNoRows) {
		return settings.Defaults(environment), nil
	}
	if err != nil {
		return settings.Settings{}, fmt.Errorf("reading settings of %q: %w", environment, err)
	}
	return s, nil
}

// All returns the newest settings of every environment that has any.
func (st *Store) All(ctx context.Context) (map[string]settings.Settings, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	rows, _ := st.pool.Query(ctx, `SELECT DISTINCT ON (environment) `+columns+`
		FROM loadbalancer_settings ORDER BY environment, id DESC`)
	list, err := pgx.CollectRows(rows, scan)
	if err != nil {
		return nil, fmt.Errorf("reading all settings: %w", err)
	}
	all := make(map[string]settings.Settings, len(list))
	for _, s := range list {
		all[s.Environment] = s
	}
	return all, nil
}

// History returns up to limit settings of the environment, newest first.
func (st *Store) History(ctx context.Context, environment string, limit int) ([]settings.Settings, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	rows, _ := st.pool.Query(ctx, `SELECT `+columns+` FROM loadbalancer_settings
		WHERE environment = $1 ORDER BY id DESC LIMIT $2`, environment, limit)
	list, err := pgx.CollectRows(rows, scan)
	if err != nil {
		return nil, fmt.Errorf("reading settings history of %q: %w", environment, err)
	}
	return list, nil
}

// Insert stores s as the environment's newest settings and notifies the
// listeners in the same transaction, so no listener sees one without the other.
func (st *Store) Insert(ctx context.Context, s settings.Settings) (settings.Settings, error) {
	s = s.WithDefaults()
	var stored settings.Settings
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	err := pgx.BeginFunc(ctx, st.pool, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, `INSERT INTO loadbalancer_settings (environment, policy, max_connections, timeout_seconds,
			retry_attempts, retry_budget_percent, stream_idle_timeout_seconds)
			VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING `+columns,
			s.Environment, string(s.Policy), s.MaxConnections, s.TimeoutSeconds,
			s.RetryAttempts, s.RetryBudgetPercent, s.StreamIdleTimeoutSeconds)
		var err error
		if stored, err = pgx.CollectExactlyOneRow(rows, scan); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `SELECT pg_notify($1, $2)`, Channel, s.Environment)
		return err
	})
	if err != nil {
		return settings.Settings{}, fmt.Errorf("storing settings of %q: %w", s.Environment, err)
	}
	return stored, nil
}
