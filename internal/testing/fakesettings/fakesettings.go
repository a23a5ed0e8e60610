// Package fakesettings is an in-memory stand-in for xds/settingsdb.Store, so
// the control plane (xds) and the settings API (xds/api) are tested without
// PostgreSQL. Like the real store it keeps every row, numbers them in
// insertion order and returns the built-in defaults of an environment with
// none; unlike it, it checks nothing, so tests can store what the database
// would refuse.
package fakesettings

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/nemesis-ml/nemesis/xds/settings"
)

// Store is safe for concurrent use.
type Store struct {
	mu   sync.Mutex
	rows []settings.Settings
	err  error
}

// New returns an empty store.
func New() *Store { return &Store{} }

// Fail makes every later call fail with err (nil heals the store).
func (s *Store) Fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = err
}

// Rows returns every stored row, oldest first.
func (s *Store) Rows() []settings.Settings {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.rows)
}

// Current returns the environment's newest settings, or its defaults.
func (s *Store) Current(_ context.Context, environment string) (settings.Settings, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return settings.Settings{}, s.err
	}
	for _, row := range slices.Backward(s.rows) {
		if row.Environment == environment {
			return row, nil
		}
	}
	return settings.Defaults(environment), nil
}

// All returns the newest settings of every environment that has any.
func (s *Store) All(_ context.Context) (map[string]settings.Settings, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	all := map[string]settings.Settings{}
	for _, row := range s.rows {
		all[row.Environment] = row
	}
	return all, nil
}

// History returns up to limit settings of the environment, newest first.
func (s *Store) History(_ context.Context, environment string, limit int) ([]settings.Settings, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	out := []settings.Settings{}
	for _, row := range slices.Backward(s.rows) {
		if row.Environment == environment && len(out) < limit {
			out = append(out, row)
		}
	}
	return out, nil
}

// Insert stores st as the environment's newest settings, with the next
// version and the current time.
func (s *Store) Insert(_ context.Context, st settings.Settings) (settings.Settings, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return settings.Settings{}, s.err
	}
	st.Version = int64(len(s.rows) + 1)
	st.UpdatedAt = time.Now().UTC()
	st.Default = false
	s.rows = append(s.rows, st)
	return st, nil
}
