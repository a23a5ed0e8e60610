package logsink

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

func testConfig(t *testing.T) Config {
	return Config{BatchSize: 100, FlushInterval: 100 * time.Millisecond, MemoryRows: 1000, MemoryBytes: 64 << 20,
		SpillDir: t.TempDir(), SpillMaxBytes: 1 << 22, LeftoverMaxAge: time.Hour, Writers: 2}
}

// refuseTeapots makes PostgreSQL itself refuse rows of status 418, which the
// sink's own checks let through: a stand-in for any constraint a database
// adds.
func refuseTeapots(t *testing.T, f *fixture) {
	testenv.Exec(t, f.url, `ALTER TABLE proxy_logs ADD CONSTRAINT no_teapots CHECK (response_status <> 418)`)
}

type rejectedRow struct {
	Reason, Error string
	Row           Row
}

func readRejected(t *testing.T, f *fixture) map[string]rejectedRow {
	t.Helper()
	pool := f.pool
	rows, err := pool.Query(t.Context(), `SELECT reason, error, row_data::text FROM proxy_logs_rejected`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]rejectedRow{}
	for rows.Next() {
		var r rejectedRow
		var raw string
		if err := rows.Scan(&r.Reason, &r.Error, &raw); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(raw), &r.Row); err != nil {
			t.Fatalf("row_data %s: %v", raw, err)
		}
		if _, dup := out[r.Row.RequestID]; dup {
			t.Fatalf("%s rejected twice", r.Row.RequestID)
		}
		out[r.Row.RequestID] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// spoil makes rows i of rs bad: long environments, NULs and teapots.
func spoil(rs []Row) map[string]string {
	want := map[string]string{}
	for i := range rs {
		switch i % 10 {
		case 3:
			rs[i].Environment = strings.Repeat("e", 51)
			want[rs[i].RequestID] = ReasonEnvironment
		case 5:
			rs[i].TargetURL += "\x00"
			want[rs[i].RequestID] = ReasonText
		case 7:
			rs[i].Status = 418
			want[rs[i].RequestID] = ReasonDatabase
		}
	}
	return want
}

func checkRejected(t *testing.T, f *fixture, want map[string]string) {
	t.Helper()
	got := readRejected(t, f)
	if len(got) != len(want) {
		t.Fatalf("proxy_logs_rejected has %d rows, want %d", len(got), len(want))
	}
	for id, reason := range want {
		r, ok := got[id]
		switch {
		case !ok:
			t.Fatalf("%s is not in proxy_logs_rejected", id)
		case r.Reason != reason:
			t.Fatalf("%s rejected for %s (%s), want %s", id, r.Reason, r.Error, reason)
		case reason == ReasonDatabase && !strings.Contains(r.Error, "no_teapots") && !strings.Contains(r.Error, "23514"):
			t.Fatalf("%s: error %q does not carry PostgreSQL's", id, r.Error)
		}
	}
	var good int
	if err := f.pool.QueryRow(t.Context(), `SELECT count(*) FROM proxy_logs WHERE request_id = ANY($1)`, keys(want)).Scan(&good); err != nil {
		t.Fatal(err)
	}
	if good != 0 {
		t.Fatalf("%d rejected rows are in proxy_logs too", good)
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestBadRowsGoAsideAndTheRestIsWrittenOnce(t *testing.T) {
	f := newFixture(t)
	refuseTeapots(t, f)
	reg := prometheus.NewRegistry()
	s, err := New(f.pool, testConfig(t), reg, testLog())
	if err != nil {
		t.Fatal(err)
	}
	run(t, s)
	rs := rows(0, 1000)
	want := spoil(rs)
	for i := 0; i < len(rs); i += 37 {
		s.Add(rs[i:min(i+37, len(rs))]...)
	}
	waitWritten(t, s, int64(len(rs)-len(want)), 20*time.Second)
	var total, distinct int
	testenv.QueryRow(t, f.url, `SELECT count(*), count(DISTINCT request_id) FROM proxy_logs`, &total, &distinct)
	if total != len(rs)-len(want) || distinct != total {
		t.Fatalf("proxy_logs has %d rows (%d distinct), want the %d good ones once", total, distinct, len(rs)-len(want))
	}
	checkRejected(t, f, want)
	for reason, n := range map[string]float64{ReasonEnvironment: 100, ReasonText: 100, ReasonDatabase: 100} {
		if got := testutil.ToFloat64(s.rejected.WithLabelValues(reason)); got != n {
			t.Errorf("rejected{reason=%s} = %v, want %v", reason, got, n)
		}
	}
	if st := s.Stats(); st.Rejected != 300 || st.Dropped != 0 || st.Pending != 0 {
		t.Fatalf("%+v, want 300 rejected, none dropped or pending", st)
	}
}

func TestSpilledBatchWithRefusedRowsIsWrittenWithoutThem(t *testing.T) {
	f := newFixture(t)
	refuseTeapots(t, f)
	cfg := testConfig(t)
	rs := rows(0, 50)
	want := spoil(rs)
	// As an older version, or a hand, left it: nothing checked.
	b := batch{ID: uuid.New(), Rows: rs}
	raw, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("%020d-%s-%d.json", time.Now().UnixNano(), b.ID, len(rs))
	if err := os.WriteFile(filepath.Join(cfg.SpillDir, name), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	s := newSink(t, f, cfg)
	if st := s.Stats(); st.Pending != 50 {
		t.Fatalf("%+v, want the 50 spilled rows pending", st)
	}
	run(t, s)
	waitWritten(t, s, int64(len(rs)-len(want)), 20*time.Second)
	checkTable(t, f, len(rs)-len(want))
	checkRejected(t, f, want)
	if left, _ := os.ReadDir(cfg.SpillDir); len(left) != 0 {
		t.Fatalf("spill folder still holds %v", left)
	}
}

func TestMemoryIsBoundedInBytes(t *testing.T) {
	f := newFixture(t)
	cfg := testConfig(t)
	cfg.BatchSize, cfg.MemoryRows, cfg.MemoryBytes = 10, 1000, 1<<20
	s := newSink(t, f, cfg)
	if err := f.pg.Stop(); err != nil {
		t.Fatal(err)
	}
	run(t, s)
	rs := rows(0, 1000)
	long := strings.Repeat("x", 60<<10) // 60 KB URLs: cut to MaxURLBytes
	for i := range rs {
		rs[i].TargetURL += long
	}
	s.Add(rs...)
	st := s.Stats()
	s.mu.Lock()
	inMemory := s.memoryBytes
	s.mu.Unlock()
	if st.Truncated != 1000 || st.Spilled == 0 || inMemory > cfg.MemoryBytes {
		t.Fatalf("%+v, %d bytes in memory: want every URL truncated, memory within %d bytes and the rest spilled", st, inMemory, cfg.MemoryBytes)
	}
	if err := f.pg.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitWritten(t, s, 1000, 30*time.Second)
	var longest int
	var marker bool
	testenv.QueryRow(t, f.url, `SELECT max(octet_length(target_url)), bool_and(target_url LIKE '%`+TruncatedMarker+`') FROM proxy_logs`, &longest, &marker)
	if longest != MaxURLBytes || !marker {
		t.Fatalf("longest stored URL %d bytes (want %d), all end in the marker: %v", longest, MaxURLBytes, marker)
	}
}

func TestLeftoversCountAndExpire(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(dir, "00000000000000000001-x.json.bad")
	fresh := filepath.Join(dir, "00000000000000000002-y.json.tmp")
	for _, p := range []string{old, fresh} {
		if err := os.WriteFile(p, make([]byte, 3000), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chtimes(old, time.Now().Add(-2*time.Hour), time.Now().Add(-2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	sp, err := openSpill(dir, 5000, time.Hour, testLog())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Fatalf("the expired leftover is still there: %v", err)
	}
	if sp.bytes != 3000 {
		t.Fatalf("spill counts %d bytes, want the fresh leftover's 3000", sp.bytes)
	}
	if err := sp.put(&batch{ID: uuid.New(), Rows: rows(0, 20)}); err == nil {
		t.Fatal("a batch that passes the limit only with the leftover counted was spilled")
	}
	sp.expire(time.Now().Add(2 * time.Hour))
	if _, err := os.Stat(fresh); !os.IsNotExist(err) || sp.bytes != 0 {
		t.Fatalf("after its age the leftover is still there (%v) or counted (%d bytes)", err, sp.bytes)
	}
}
