package decisions_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nemesis-ml/nemesis/controller/decisions"
	"github.com/nemesis-ml/nemesis/internal/database"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

func TestMain(m *testing.M) { testenv.Run(m) }

func open(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := database.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// writer runs a writer until the test ends.
func writer(t *testing.T, pool *pgxpool.Pool, buffer int) (*decisions.Writer, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	w, err := decisions.NewWriter(pool, decisions.WriterConfig{Buffer: buffer, FlushInterval: 50 * time.Millisecond}, reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return w, reg
}

func count(t *testing.T, url string) int {
	t.Helper()
	var n int
	testenv.QueryRow(t, url, "SELECT count(*) FROM scaling_decisions", &n)
	return n
}

func TestRecordsAreServedNewestFirstFilteredAndPaged(t *testing.T) {
	_, url := testenv.Database(t)
	pool := open(t, url)
	w, _ := writer(t, pool, 100)
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	v := 850.0
	for i := range 5 {
		r := decisions.Record{
			Namespace: "ml", Name: "digits", Time: t0.Add(time.Duration(i) * time.Minute),
			From: int32(i), To: int32(i + 1), Action: "INCREASE_INSTANCES", Rule: "cpu-high", Reason: "busy",
			Inputs: []decisions.Input{{Rule: "cpu-high", Metric: "CPU_USAGE", Operator: "GREATER_THAN", Value: &v, Threshold: 700,
				WindowSeconds: 30, ReadyPods: i, ReportingPods: i, Samples: 3 * i}},
		}
		if i == 2 {
			r.To, r.Action, r.LimitedBy = r.From, "HOLD", "stabilization_window"
		}
		w.Record(r)
	}
	w.Record(decisions.Record{Namespace: "ml", Name: "other", Time: t0, Action: "HOLD", LimitedBy: "dry_run"})
	testenv.Eventually(t, 10*time.Second, "six records written", func() error {
		if n := count(t, url); n != 6 {
			return fmt.Errorf("%d rows", n)
		}
		return nil
	})

	mux := http.NewServeMux()
	mux.Handle(decisions.Pattern, decisions.NewHandler(pool, slog.New(slog.DiscardHandler)))
	get := func(path string) ([]decisions.Record, *httptest.ResponseRecorder) {
		t.Helper()
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		var out []decisions.Record
		if rec.Code == http.StatusOK {
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
				t.Fatal(err)
			}
		}
		return out, rec
	}

	all, _ := get("/autoscalers/ml/digits/decisions")
	if len(all) != 5 || all[0].To != 5 || all[4].To != 1 {
		t.Fatalf("got %+v, want 5 records of ml/digits, newest first", all)
	}
	if in := all[0].Inputs; len(in) != 1 || *in[0].Value != 850 || in[0].Samples != 12 || in[0].WindowSeconds != 30 {
		t.Errorf("inputs came back as %+v", in)
	}
	held, _ := get("/autoscalers/ml/digits/decisions?limited_by=any")
	if len(held) != 1 || held[0].LimitedBy != "stabilization_window" || held[0].From != held[0].To {
		t.Errorf("limited_by=any: %+v", held)
	}
	if none, rec := get("/autoscalers/ml/digits/decisions?since=2026-12-01T10:03:00Z&until=2026-12-01T10:01:00Z"); rec.Code != http.StatusOK || len(none) != 0 {
		t.Errorf("until before since: %d %s, want an empty page", rec.Code, rec.Body)
	}
	changed, _ := get("/autoscalers/ml/digits/decisions?changed=true&since=2026-12-01T10:01:00Z")
	if len(changed) != 3 {
		t.Errorf("changed since 10:01: %d records, want 3", len(changed))
	}

	var seen []int32
	path := "/autoscalers/ml/digits/decisions?limit=2"
	for path != "" {
		page, rec := get(path)
		for _, r := range page {
			seen = append(seen, r.To)
		}
		path = ""
		if link := rec.Header().Get("Link"); link != "" {
			path = strings.TrimSuffix(strings.TrimPrefix(link, "<"), `>; rel="next"`)
		}
	}
	if fmt.Sprint(seen) != "[5 4 2 2 1]" {
		t.Errorf("pages gave to_replicas %v, want [5 4 2 2 1]", seen)
	}

	for query, field := range map[string]string{
		"limit=0": "limit", "since=yesterday": "since", "changed=maybe": "changed", "cursor=xyz": "cursor", "colour=blue": "colour",
		"rule=a%00b": "rule", "rule=": "rule", "rule=Cpu_High": "rule", "action=SCALE": "action", "limited_by=": "limited_by",
		"limited_by=budget": "limited_by", "cursor=" + (decisions.Cursor{Time: t0, ID: 0}).Encode(): "cursor",
	} {
		_, rec := get("/autoscalers/ml/digits/decisions?" + query)
		var body struct{ Field string }
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		if rec.Code != http.StatusBadRequest || body.Field != field {
			t.Errorf("%s: %d %s, want 400 naming %q", query, rec.Code, rec.Body, field)
		}
	}

	n, err := decisions.Retention{Pool: pool}.Pass(t.Context(), t0.Add(90*time.Second))
	if err != nil || n != 3 || count(t, url) != 3 {
		t.Errorf("retention deleted %d (%v), %d left; want 3 and 3", n, err, count(t, url))
	}
}

func TestWritesWaitForPostgresWithoutBlocking(t *testing.T) {
	pg, url := testenv.Database(t)
	pool := open(t, url)
	w, reg := writer(t, pool, 3)
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := range 5 {
		w.Record(decisions.Record{Namespace: "ml", Name: "digits", Time: time.Now(), To: int32(i), Action: "HOLD"})
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("recording with PostgreSQL down took %s", d)
	}
	dropped := func() float64 {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "nemesis_scaling_decisions_dropped_total" {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		return -1
	}
	testenv.Eventually(t, 10*time.Second, "the two oldest records dropped", func() error {
		if d := dropped(); d != 2 {
			return fmt.Errorf("dropped %v", d)
		}
		return nil
	})
	if err := pg.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "the three kept records written", func() error {
		var n, lowest int
		testenv.QueryRow(t, url, "SELECT count(*), coalesce(min(to_replicas), -1) FROM scaling_decisions", &n, &lowest)
		if n != 3 || lowest != 2 {
			return fmt.Errorf("%d rows, lowest to_replicas %d", n, lowest)
		}
		return nil
	})
}

// The pod's stages and the release complete the wake's record, in whatever
// order they arrive, the pod ready no later than the endpoint ACK; the
// older wake is left alone.
func TestAReleaseCompletesItsWakesStages(t *testing.T) {
	_, url := testenv.Database(t)
	pool := open(t, url)
	w, _ := writer(t, pool, 100)
	t0 := time.Now().UTC().Truncate(time.Millisecond)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	// An older wake of the same model, which the release must leave alone.
	w.Record(decisions.Record{Namespace: "ml", Name: "digits", Time: at(-60_000), To: 1, Action: "INCREASE_INSTANCES",
		Wake: &decisions.Wake{RequestHeld: at(-60_010), Decided: at(-60_000), ScaleWritten: at(-59_990)}})
	// The controller's clock has nanoseconds; PostgreSQL keeps microseconds.
	decided := at(10).Add(789 * time.Nanosecond)
	w.Record(decisions.Record{Namespace: "ml", Name: "digits", Time: decided, To: 1, Action: "INCREASE_INSTANCES",
		Wake: &decisions.Wake{RequestHeld: at(2), Decided: decided, ScaleWritten: at(15)}})
	w.PodStages(decisions.PodStages{Namespace: "ml", Name: "digits", Decided: decided, Pod: "digits-abc", Created: at(40)})
	w.Released(decisions.Released{Namespace: "ml", Name: "digits", FirstHeld: at(0), EndpointAcked: at(900), Released: at(905), Held: 7})
	// The watch heard of the pod's readiness after Envoy ACKed its endpoint:
	// the ACK bounds it.
	w.PodStages(decisions.PodStages{Namespace: "ml", Name: "digits", Decided: decided, Pod: "digits-abc", Created: at(40), Ready: at(920)})
	// Another model's pod ready before the ACK, heard of after the release.
	w.Record(decisions.Record{Namespace: "ml", Name: "text", Time: at(10), To: 1, Action: "INCREASE_INSTANCES",
		Wake: &decisions.Wake{RequestHeld: at(2), Decided: at(10), ScaleWritten: at(15)}})
	w.Released(decisions.Released{Namespace: "ml", Name: "text", FirstHeld: at(0), EndpointAcked: at(900), Released: at(905), Held: 1})
	w.PodStages(decisions.PodStages{Namespace: "ml", Name: "text", Decided: at(10), Pod: "text-abc", Created: at(40), Ready: at(880)})

	h := decisions.NewHandler(pool, slog.New(slog.DiscardHandler))
	q, _ := decisions.Parse("ml", "digits", nil)
	testenv.Eventually(t, 10*time.Second, "the release merged", func() error {
		page, _, err := h.Page(t.Context(), q)
		if err != nil {
			return err
		}
		if len(page) != 2 || page[0].Wake == nil || page[0].Wake.HeldRequests != 7 || page[0].Wake.PodReady.IsZero() {
			return fmt.Errorf("records %+v", page)
		}
		w := page[0].Wake
		want := decisions.Wake{RequestHeld: at(0), Decided: decided, ScaleWritten: at(15), Pod: "digits-abc", PodCreated: at(40), PodReady: at(900),
			EndpointAcked: at(900), Released: at(905), HeldRequests: 7}
		if !w.RequestHeld.Equal(want.RequestHeld) || !w.Decided.Equal(want.Decided) || !w.ScaleWritten.Equal(want.ScaleWritten) ||
			w.Pod != want.Pod || !w.PodCreated.Equal(want.PodCreated) || !w.PodReady.Equal(want.PodReady) ||
			!w.EndpointAcked.Equal(want.EndpointAcked) || !w.Released.Equal(want.Released) {
			return fmt.Errorf("stages %+v, want %+v", *w, want)
		}
		if old := page[1].Wake; old.HeldRequests != 0 || !old.Released.IsZero() || old.Pod != "" {
			t.Errorf("the older wake changed: %+v", *old)
		}
		return nil
	})
	q, _ = decisions.Parse("ml", "text", nil)
	testenv.Eventually(t, 10*time.Second, "the other model's pod merged", func() error {
		page, _, err := h.Page(t.Context(), q)
		if err != nil {
			return err
		}
		if len(page) != 1 || page[0].Wake == nil || !page[0].Wake.PodReady.Equal(at(880)) || !page[0].Wake.EndpointAcked.Equal(at(900)) {
			return fmt.Errorf("records %+v, want the pod ready at %s", page, at(880))
		}
		return nil
	})
}
