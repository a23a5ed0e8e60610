package database_test

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nemesis-ml/nemesis/internal/database"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

// column is one row of information_schema.columns.
type column struct {
	Name, Type, Nullable, Default string
}

func columns(t *testing.T, conn *pgx.Conn, table string) []column {
	t.Helper()
	rows, err := conn.Query(t.Context(), `
		SELECT column_name, CASE WHEN data_type = 'USER-DEFINED' THEN udt_name
		                         WHEN character_maximum_length IS NOT NULL THEN data_type || '(' || character_maximum_length || ')'
		                         ELSE data_type END,
		       is_nullable, coalesce(column_default, '')
		FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position`, table)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[column])
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestMigrationsCreateTheSeedSchema(t *testing.T) {
	_, url := testenv.Database(t)
	ctx := testenv.Context(t, 30*time.Second)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(ctx) }()

	wantSettings := []column{
		{"id", "integer", "NO", "nextval('loadbalancer_settings_id_seq'::regclass)"},
		{"environment", "character varying(50)", "NO", ""},
		{"policy", "loadbalancer_policy", "NO", ""},
		{"max_connections", "integer", "NO", ""},
		{"timeout_seconds", "integer", "NO", ""},
		{"updated_at", "timestamp without time zone", "NO", "CURRENT_TIMESTAMP"},
	}
	wantLogs := []column{
		{"id", "bigint", "NO", "nextval('proxy_logs_id_seq'::regclass)"},
		{"timestamp", "timestamp without time zone", "NO", ""},
		{"client_ip", "inet", "NO", ""},
		{"target_url", "text", "NO", ""},
		{"http_method", "character varying(10)", "NO", ""},
		{"response_status", "integer", "NO", ""},
		{"latency_ms", "integer", "YES", ""},
	}
	for table, want := range map[string][]column{"loadbalancer_settings": wantSettings, "proxy_logs": wantLogs} {
		got := columns(t, conn, table)
		if len(got) < len(want) {
			t.Fatalf("%s has columns %v, want at least %v", table, got, want)
		}
		for i, w := range want {
			if got[i] != w {
				t.Errorf("%s column %d = %+v, want %+v", table, i, got[i], w)
			}
		}
	}

	var labels []string
	if err := conn.QueryRow(ctx, `SELECT array_agg(enumlabel::text ORDER BY enumsortorder) FROM pg_enum
		WHERE enumtypid = 'loadbalancer_policy'::regtype`).Scan(&labels); err != nil {
		t.Fatal(err)
	}
	if strings.Join(labels, ",") != "round_robin,least_connections,random" {
		t.Errorf("loadbalancer_policy labels = %v", labels)
	}

	for index, def := range map[string]string{
		"idx_loadbalancer_settings_env": "(environment)",
		"idx_proxy_logs_timestamp":      "(\"timestamp\")",
		"idx_proxy_logs_target_url":     "(target_url)",
	} {
		var got string
		if err := conn.QueryRow(ctx, `SELECT indexdef FROM pg_indexes WHERE indexname = $1`, index).Scan(&got); err != nil {
			t.Errorf("index %s: %v", index, err)
			continue
		}
		if !strings.HasSuffix(got, def) {
			t.Errorf("index %s = %q, want it on %s", index, got, def)
		}
	}
}

// migrateConcurrently runs Migrate from n pools at once, as n replicas
// starting together would.
func migrateConcurrently(t *testing.T, url string, n int) {
	t.Helper()
	ctx := testenv.Context(t, time.Minute)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			pool, err := database.Open(ctx, url)
			if err != nil {
				errs <- err
				return
			}
			defer pool.Close()
			errs <- database.Migrate(ctx, pool, slog.New(slog.DiscardHandler))
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a replica failed to migrate: %v", err)
		}
	}
}

func TestMigratingAgainChangesNothing(t *testing.T) {
	_, url := testenv.Database(t)
	var before int
	testenv.QueryRow(t, url, `SELECT count(*) FROM goose_db_version`, &before)
	migrateConcurrently(t, url, 2)
	var after int
	testenv.QueryRow(t, url, `SELECT count(*) FROM goose_db_version`, &after)
	if after != before {
		t.Fatalf("goose_db_version rows: %d before, %d after migrating again", before, after)
	}
}

func TestConcurrentFirstMigrationsApplyOnce(t *testing.T) {
	pg := testenv.Postgres(t)
	if err := pg.CreateDatabase(testenv.Context(t, time.Minute), "fresh"); err != nil {
		t.Fatal(err)
	}
	url := pg.URL("fresh")
	migrateConcurrently(t, url, 3)
	// Versions may have gaps (helpers working in parallel number theirs
	// apart), so each is counted rather than compared with the latest.
	var applied, versions int
	testenv.QueryRow(t, url, `SELECT count(*), count(DISTINCT version_id) FROM goose_db_version WHERE version_id > 0`, &applied, &versions)
	if applied != versions {
		t.Fatalf("%d migrations recorded for %d versions: some applied twice", applied, versions)
	}
}
