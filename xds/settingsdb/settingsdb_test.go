package settingsdb_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nemesis-ml/nemesis/internal/database"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
	"github.com/nemesis-ml/nemesis/xds/settings"
	"github.com/nemesis-ml/nemesis/xds/settingsdb"
)

// open starts PostgreSQL with the migrations applied and returns a pool on
// it and its URL.
func open(t *testing.T) (*pgxpool.Pool, string) {
	t.Helper()
	_, url := testenv.Database(t)
	pool, err := database.Open(testenv.Context(t, time.Minute), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool, url
}

func prod(policy settings.Policy, maxConnections int) settings.Settings {
	return settings.Settings{Environment: "prod", Policy: policy, MaxConnections: maxConnections, TimeoutSeconds: 30}
}

func TestInsertCurrentHistoryAll(t *testing.T) {
	t.Parallel()
	pool, _ := open(t)
	st := settingsdb.NewStore(pool)
	ctx := testenv.Context(t, time.Minute)

	if got, err := st.Current(ctx, "prod"); err != nil || got != settings.Defaults("prod") {
		t.Fatalf("Current before any insert = %+v, %v; want the defaults", got, err)
	}
	if all, err := st.All(ctx); err != nil || len(all) != 0 {
		t.Fatalf("All before any insert = %+v, %v; want none", all, err)
	}

	var stored []settings.Settings
	for _, s := range []settings.Settings{
		prod(settings.RoundRobin, 10),
		{Environment: "staging", Policy: settings.Random, MaxConnections: 1, TimeoutSeconds: 1},
		prod(settings.LeastConnections, 20),
		prod(settings.Random, 30),
	} {
		got, err := st.Insert(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		if got.Version == 0 || got.UpdatedAt.IsZero() || got.Default || got.Policy != s.Policy || got.MaxConnections != s.MaxConnections {
			t.Fatalf("Insert(%+v) = %+v", s, got)
		}
		if len(stored) > 0 && got.Version <= stored[len(stored)-1].Version {
			t.Fatalf("version %d after %d: versions must increase", got.Version, stored[len(stored)-1].Version)
		}
		stored = append(stored, got)
	}

	if got, err := st.Current(ctx, "prod"); err != nil || !equal(got, stored[3]) {
		t.Errorf("Current(prod) = %+v, %v; want %+v", got, err, stored[3])
	}
	history, err := st.History(ctx, "prod", 2)
	if err != nil || len(history) != 2 || !equal(history[0], stored[3]) || !equal(history[1], stored[2]) {
		t.Errorf("History(prod, 2) = %+v, %v; want the two newest, newest first", history, err)
	}
	all, err := st.All(ctx)
	if err != nil || len(all) != 2 || !equal(all["prod"], stored[3]) || !equal(all["staging"], stored[1]) {
		t.Errorf("All = %+v, %v; want the newest of prod and staging", all, err)
	}
}

// equal compares settings, their times to the microsecond PostgreSQL keeps.
func equal(a, b settings.Settings) bool {
	return a.UpdatedAt.Equal(b.UpdatedAt) && a.Environment == b.Environment && a.Policy == b.Policy &&
		a.MaxConnections == b.MaxConnections && a.TimeoutSeconds == b.TimeoutSeconds && a.Version == b.Version && a.Default == b.Default
}

func TestInsertRefusedByTheDatabaseStoresNothing(t *testing.T) {
	t.Parallel()
	pool, _ := open(t)
	st := settingsdb.NewStore(pool)
	ctx := testenv.Context(t, time.Minute)
	_, err := st.Insert(ctx, prod("fastest", 10))
	if err == nil || !strings.Contains(err.Error(), `"prod"`) {
		t.Fatalf("Insert of a policy the enum lacks: %v, want an error naming prod", err)
	}
	if history, err := st.History(ctx, "prod", 10); err != nil || len(history) != 0 {
		t.Errorf("History after a refused insert = %+v, %v; want none", history, err)
	}
}

// watch runs settingsdb.Watch until the test ends and returns the
// environments it reports; an error sent on fail makes the next call of
// changed fail with it.
func watch(t *testing.T, pool *pgxpool.Pool) (changes <-chan string, fail chan<- error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out, failc := make(chan string, 64), make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		settingsdb.Watch(ctx, pool, slog.New(slog.DiscardHandler), func(env string) error {
			// Take the failure before reporting, so one sent after a
			// report applies to the next call, not to the one reported.
			var err error
			select {
			case err = <-failc:
			default:
			}
			out <- env
			return err
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return out, failc
}

func next(t *testing.T, changes <-chan string) string {
	t.Helper()
	select {
	case env := <-changes:
		return env
	case <-time.After(15 * time.Second):
		t.Fatal("Watch reported nothing")
		return ""
	}
}

func TestWatchReportsEveryInsertAndRereadsAfterReconnecting(t *testing.T) {
	t.Parallel()
	pool, url := open(t)
	st := settingsdb.NewStore(pool)
	ctx := testenv.Context(t, time.Minute)
	changes, fail := watch(t, pool)

	if env := next(t, changes); env != "" {
		t.Fatalf("first report %q, want \"\" (re-read everything) on connecting", env)
	}
	for _, env := range []string{"prod", "staging"} {
		if _, err := st.Insert(ctx, settings.Settings{Environment: env, Policy: settings.Random, MaxConnections: 1, TimeoutSeconds: 1}); err != nil {
			t.Fatal(err)
		}
		if got := next(t, changes); got != env {
			t.Fatalf("after inserting %s Watch reported %q", env, got)
		}
	}

	// The listening connection is cut: notifications sent meanwhile are
	// lost, so Watch reconnects and says to re-read everything.
	var cut int
	testenv.QueryRow(t, url, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE query = 'LISTEN `+settingsdb.Channel+`'`, &cut)
	if cut != 1 {
		t.Fatalf("terminated %d listening connections, want 1", cut)
	}
	if env := next(t, changes); env != "" {
		t.Fatalf("after the connection was cut Watch reported %q, want \"\"", env)
	}
	if _, err := st.Insert(ctx, prod(settings.RoundRobin, 5)); err != nil {
		t.Fatal(err)
	}
	if env := next(t, changes); env != "prod" {
		t.Fatalf("after reconnecting Watch reported %q for an insert of prod", env)
	}

	// A failed re-read is retried on a fresh connection.
	fail <- errors.New("control plane busy")
	if _, err := st.Insert(ctx, prod(settings.RoundRobin, 6)); err != nil {
		t.Fatal(err)
	}
	if env := next(t, changes); env != "prod" {
		t.Fatalf("Watch reported %q for an insert of prod", env)
	}
	if env := next(t, changes); env != "" {
		t.Fatalf("after changed failed Watch reported %q, want \"\" from a new connection", env)
	}
}
