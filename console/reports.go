package console

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nemesis-ml/nemesis/internal/httpjson"
	"github.com/nemesis-ml/nemesis/internal/validation"
)

// Report compares each route's and each environment's figures over a
// period with the period before, from the per-minute rollups, the decision
// record, the settings history and an index of the activator's rejections
// (no scan of proxy_logs).
type Report struct {
	Since         time.Time        `json:"since"`
	Until         time.Time        `json:"until"`
	PreviousSince time.Time        `json:"previous_since"`
	Rows          []ReportRow      `json:"rows"`
	Environments  []EnvironmentRow `json:"environments"`
}

// ReportRow is one route (an autoscaler's is namespace/name).
type ReportRow struct {
	Route    string `json:"route"`
	Current  Totals `json:"current"`
	Previous Totals `json:"previous"`
}

// Totals are one route's figures over one period. Latency percentiles are
// the upper edges of the rollup buckets that hold them.
type Totals struct {
	Requests   int64    `json:"requests"`
	Errors     int64    `json:"errors"`
	ErrorRate  *float64 `json:"error_rate"`
	P50        *float64 `json:"p50_latency_ms"`
	P95        *float64 `json:"p95_latency_ms"`
	P99        *float64 `json:"p99_latency_ms"`
	ScaleUps   int64    `json:"scale_ups"`
	ScaleDowns int64    `json:"scale_downs"`
	ColdStarts int64    `json:"cold_starts"`
	// HoldP50Seconds, HoldP95Seconds and LongestHoldSeconds are the
	// median, 95th percentile and longest time a wake held its first
	// request, over the period's released wakes.
	HoldP50Seconds     *float64 `json:"hold_p50_seconds"`
	HoldP95Seconds     *float64 `json:"hold_p95_seconds"`
	LongestHoldSeconds *float64 `json:"longest_hold_seconds"`
	// ReplicaHours and TimeAtZeroSeconds integrate an autoscaler's
	// replicas over the period from its applied decisions; nil for a route
	// the decision record knows nothing of.
	ReplicaHours      *float64 `json:"replica_hours"`
	TimeAtZeroSeconds *float64 `json:"time_at_zero_seconds"`
	// RejectedHeld counts the requests the activator answered 503 itself.
	RejectedHeld int64 `json:"rejected_held_requests"`
}

// EnvironmentRow is one environment's figures.
type EnvironmentRow struct {
	Environment string            `json:"environment"`
	Current     EnvironmentTotals `json:"current"`
	Previous    EnvironmentTotals `json:"previous"`
}

// EnvironmentTotals are one environment's figures over one period.
type EnvironmentTotals struct {
	Requests     int64    `json:"requests"`
	Errors       int64    `json:"errors"`
	ErrorRate    *float64 `json:"error_rate"`
	RejectedHeld int64    `json:"rejected_held_requests"`
	// SettingsChanges counts the load-balancer settings versions stored.
	SettingsChanges int64 `json:"settings_changes"`
}

// parsePeriod reads period=day|week, or since and until (RFC 3339).
func parsePeriod(v url.Values, now time.Time) (since, until time.Time, err error) {
	bad := func(field, msg string) (time.Time, time.Time, error) {
		return time.Time{}, time.Time{}, &validation.FieldError{Field: field, Message: msg}
	}
	for key := range v {
		if key != "period" && key != "since" && key != "until" && key != "format" {
			return bad(key, "unknown parameter")
		}
	}
	// A parameter given empty is refused, not taken as absent: the page's
	// form drops empty fields before it gets here (filters).
	until = now
	if v.Has("until") {
		if until, err = time.Parse(time.RFC3339, v.Get("until")); err != nil {
			return bad("until", "must be an RFC 3339 time like 2026-01-02T15:04:05Z")
		}
	}
	switch p := v.Get("period"); {
	case v.Has("since"):
		if v.Has("period") {
			return bad("period", "give a period or since, not both")
		}
		if since, err = time.Parse(time.RFC3339, v.Get("since")); err != nil {
			return bad("since", "must be an RFC 3339 time like 2026-01-02T15:04:05Z")
		}
	case !v.Has("period") || p == "day":
		since = until.Add(-24 * time.Hour)
	case p == "week":
		since = until.Add(-7 * 24 * time.Hour)
	default:
		return bad("period", "must be day or week")
	}
	if !until.After(since) {
		return bad("until", "must be after since")
	}
	return since.UTC(), until.UTC(), nil
}

func (c *Console) report(ctx context.Context, since, until time.Time) (*Report, error) {
	previous := since.Add(-until.Sub(since))
	rep := &Report{Since: since, Until: until, PreviousSince: previous}
	routes, envs := map[string]*ReportRow{}, map[string]*EnvironmentRow{}
	for i, span := range [][2]time.Time{{since, until}, {previous, since}} {
		f := figures{
			route: func(name string) *Totals {
				r, ok := routes[name]
				if !ok {
					r = &ReportRow{Route: name}
					routes[name] = r
				}
				if i == 0 {
					return &r.Current
				}
				return &r.Previous
			},
			environment: func(name string) *EnvironmentTotals {
				e, ok := envs[name]
				if !ok {
					e = &EnvironmentRow{Environment: name}
					envs[name] = e
				}
				if i == 0 {
					return &e.Current
				}
				return &e.Previous
			},
		}
		for _, add := range []func(context.Context, time.Time, time.Time, figures) error{
			c.reportTraffic, c.reportRejected, c.reportDecisions, c.reportReplicas, c.reportSettings,
		} {
			if err := add(ctx, span[0], span[1], f); err != nil {
				return nil, err
			}
		}
	}
	// An empty report has rows [], not null: the document says array.
	rep.Rows = make([]ReportRow, 0, len(routes))
	for _, r := range routes {
		rep.Rows = append(rep.Rows, *r)
	}
	sort.Slice(rep.Rows, func(i, j int) bool { return rep.Rows[i].Route < rep.Rows[j].Route })
	rep.Environments = make([]EnvironmentRow, 0, len(envs))
	for _, e := range envs {
		rep.Environments = append(rep.Environments, *e)
	}
	sort.Slice(rep.Environments, func(i, j int) bool { return rep.Environments[i].Environment < rep.Environments[j].Environment })
	return rep, nil
}

// figures finds (or adds) the totals of one route or one environment in the
// period being summed.
type figures struct {
	route       func(string) *Totals
	environment func(string) *EnvironmentTotals
}

func errorRate(requests, errors int64) *float64 {
	if requests == 0 {
		return nil
	}
	rate := float64(errors) / float64(requests)
	return &rate
}

// reportTraffic sums the rollups of [since, until) by route and by
// environment in one pass: the whole hours from proxy_log_hours, the
// minutes before the first and after the last from proxy_log_minutes.
// Minutes are whole, so the bounds are taken to the minute. Each latency
// bucket is summed by its index rather than by unnesting the arrays.
func (c *Console) reportTraffic(ctx context.Context, since, until time.Time, f figures) error {
	since, until = since.Truncate(time.Minute), until.Truncate(time.Minute)
	hoursFrom, hoursUntil := since.Add(time.Hour-time.Nanosecond).Truncate(time.Hour), until.Truncate(time.Hour)
	if !hoursFrom.Before(hoursUntil) {
		// No whole hour: minutes only.
		hoursFrom, hoursUntil = until, until
	}
	sums := make([]string, len(latencyEdges)+1)
	for i := range sums {
		sums[i] = fmt.Sprintf("sum(latency_buckets[%d])::bigint", i+1)
	}
	rows, err := c.cfg.Pool.Query(ctx, `SELECT environment, route, sum(requests)::bigint, sum(errors)::bigint, ARRAY[`+strings.Join(sums, ", ")+`]
		FROM (SELECT environment, route, requests, errors, latency_buckets FROM proxy_log_hours WHERE hour >= $3 AND hour < $4
			UNION ALL SELECT environment, route, requests, errors, latency_buckets FROM proxy_log_minutes WHERE minute >= $1 AND minute < $3
			UNION ALL SELECT environment, route, requests, errors, latency_buckets FROM proxy_log_minutes WHERE minute >= $4 AND minute < $2) AS rollups
		GROUP BY environment, route`, since, until, hoursFrom, hoursUntil)
	if err != nil {
		return fmt.Errorf("summing proxy log rollups: %w", err)
	}
	defer rows.Close()
	buckets := map[string][]int64{}
	for rows.Next() {
		var env, route string
		var requests, errors int64
		var b []int64
		if err := rows.Scan(&env, &route, &requests, &errors, &b); err != nil {
			return fmt.Errorf("summing proxy log rollups: %w", err)
		}
		// A route name is the same in every environment that serves it.
		t := f.route(route)
		t.Requests += requests
		t.Errors += errors
		t.ErrorRate = errorRate(t.Requests, t.Errors)
		e := f.environment(env)
		e.Requests += requests
		e.Errors += errors
		e.ErrorRate = errorRate(e.Requests, e.Errors)
		sum := buckets[route]
		if sum == nil {
			sum = make([]int64, len(b))
			buckets[route] = sum
		}
		for i, n := range b {
			sum[i] += n
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("summing proxy log rollups: %w", err)
	}
	for route, b := range buckets {
		t := f.route(route)
		t.P50, t.P95, t.P99 = percentileBound(b, 0.50), percentileBound(b, 0.95), percentileBound(b, 0.99)
	}
	return nil
}

// reportRejected counts the held requests the activator let go with a 503
// (its hold timeout or a full queue). Nothing persistent records them (the
// activator counts them in nemesis_activator_rejected_total only), so they
// are the proxy_logs rows of [since, until) with status 503, no upstream
// and no response flag: the activator's own answer, an ext_proc immediate
// response, reaches no pod and sets no flag, where Envoy's own 503s carry
// one (UH, UF, UO...). Envoy's status_on_error 503, when the activator
// cannot be reached, looks the same and counts too. The partial index
// idx_proxy_logs_activator_rejects holds exactly these rows, so this reads
// them alone, never the period's other rows.
func (c *Console) reportRejected(ctx context.Context, since, until time.Time, f figures) error {
	rows, err := c.cfg.Pool.Query(ctx, `SELECT environment, route, count(*) FROM proxy_logs
		WHERE timestamp >= $1 AND timestamp < $2 AND response_status = 503 AND upstream_host = '' AND response_flags = ''
		GROUP BY environment, route`, since, until)
	if err != nil {
		return fmt.Errorf("counting rejected held requests: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var env, route string
		var n int64
		if err := rows.Scan(&env, &route, &n); err != nil {
			return fmt.Errorf("counting rejected held requests: %w", err)
		}
		f.route(route).RejectedHeld += n
		f.environment(env).RejectedHeld += n
	}
	return rows.Err()
}

// reportDecisions counts applied scales and wakes of [since, until).
func (c *Console) reportDecisions(ctx context.Context, since, until time.Time, f figures) error {
	rows, err := c.cfg.Pool.Query(ctx, `SELECT route,
			count(*) FILTER (WHERE to_replicas > from_replicas AND NOT dry_run),
			count(*) FILTER (WHERE to_replicas < from_replicas AND NOT dry_run),
			count(*) FILTER (WHERE wake IS NOT NULL),
			percentile_cont(0.5) WITHIN GROUP (ORDER BY hold) FILTER (WHERE hold IS NOT NULL),
			percentile_cont(0.95) WITHIN GROUP (ORDER BY hold) FILTER (WHERE hold IS NOT NULL),
			max(hold)
		FROM (SELECT namespace || '/' || name AS route, to_replicas, from_replicas, dry_run, wake,
				CASE WHEN wake ? 'released' THEN extract(epoch FROM (wake->>'released')::timestamptz - (wake->>'request_held')::timestamptz) END AS hold
			FROM scaling_decisions WHERE time >= $1 AND time < $2) AS d
		GROUP BY 1`, since, until)
	if err != nil {
		return fmt.Errorf("counting decisions: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var route string
		var ups, downs, wakes int64
		var p50, p95, longest *float64
		if err := rows.Scan(&route, &ups, &downs, &wakes, &p50, &p95, &longest); err != nil {
			return fmt.Errorf("counting decisions: %w", err)
		}
		t := f.route(route)
		t.ScaleUps, t.ScaleDowns, t.ColdStarts = ups, downs, wakes
		t.HoldP50Seconds, t.HoldP95Seconds, t.LongestHoldSeconds = p50, p95, longest
	}
	return rows.Err()
}

// reportReplicas integrates each autoscaler's replicas over [since,
// until) from its applied decisions (replicaTime). Every autoscaler the
// record knows counts, also one that did not change in the period (at zero
// all along, say): the first query walks the (namespace, name, time) index
// one autoscaler at a time and takes each one's last applied decision
// before since; the second reads the period's applied decisions by the
// time index.
func (c *Console) reportReplicas(ctx context.Context, since, until time.Time, f figures) error {
	before := map[string]*int32{}
	rows, err := c.cfg.Pool.Query(ctx, `WITH RECURSIVE autoscalers AS (
			(SELECT namespace, name FROM scaling_decisions ORDER BY namespace, name LIMIT 1)
			UNION ALL
			SELECT next.namespace, next.name FROM autoscalers a, LATERAL (
				SELECT namespace, name FROM scaling_decisions s WHERE (s.namespace, s.name) > (a.namespace, a.name)
				ORDER BY namespace, name LIMIT 1) AS next
		)
		SELECT a.namespace || '/' || a.name, last.to_replicas FROM autoscalers a LEFT JOIN LATERAL (
			SELECT to_replicas FROM scaling_decisions s
			WHERE s.namespace = a.namespace AND s.name = a.name AND s.time < $1 AND NOT s.dry_run
			ORDER BY s.time DESC, s.id DESC LIMIT 1) AS last ON true`, since)
	if err != nil {
		return fmt.Errorf("reading replicas before the period: %w", err)
	}
	for rows.Next() {
		var route string
		var to *int32
		if err := rows.Scan(&route, &to); err != nil {
			rows.Close()
			return fmt.Errorf("reading replicas before the period: %w", err)
		}
		before[route] = to
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading replicas before the period: %w", err)
	}
	changes := map[string][]Change{}
	rows, err = c.cfg.Pool.Query(ctx, `SELECT namespace || '/' || name, time, from_replicas, to_replicas FROM scaling_decisions
		WHERE time >= $1 AND time < $2 AND NOT dry_run ORDER BY time, id`, since, until)
	if err != nil {
		return fmt.Errorf("reading the period's decisions: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var route string
		var ch Change
		if err := rows.Scan(&route, &ch.Time, &ch.From, &ch.To); err != nil {
			return fmt.Errorf("reading the period's decisions: %w", err)
		}
		changes[route] = append(changes[route], ch)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading the period's decisions: %w", err)
	}
	for route, start := range before {
		rt, ok := replicaTime(start, changes[route], since, until)
		if !ok {
			continue
		}
		hours, zero := rt.ReplicaSeconds/3600, rt.ZeroSeconds
		t := f.route(route)
		t.ReplicaHours, t.TimeAtZeroSeconds = &hours, &zero
	}
	return nil
}

// reportSettings counts the load-balancer settings versions stored in
// [since, until) per environment (updated_at is UTC like every timestamp
// column). The table holds one row per version, few enough to read whole.
func (c *Console) reportSettings(ctx context.Context, since, until time.Time, f figures) error {
	rows, err := c.cfg.Pool.Query(ctx, `SELECT environment, count(*) FROM loadbalancer_settings
		WHERE updated_at >= $1 AND updated_at < $2 GROUP BY environment`, since, until)
	if err != nil {
		return fmt.Errorf("counting settings changes: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var env string
		var n int64
		if err := rows.Scan(&env, &n); err != nil {
			return fmt.Errorf("counting settings changes: %w", err)
		}
		f.environment(env).SettingsChanges = n
	}
	return rows.Err()
}

type reportData struct {
	Report *Report
	Query  string
	Error  *validation.FieldError
}

func (c *Console) reportsPage(w http.ResponseWriter, r *http.Request) {
	v := filters(r.URL.Query())
	since, until, err := parsePeriod(v, time.Now().UTC())
	if err != nil {
		fe, _ := err.(*validation.FieldError)
		c.render(w, r, http.StatusBadRequest, "reports", page{Title: "Reports", Nav: "reports", Data: reportData{Error: fe}})
		return
	}
	rep, err := c.report(r.Context(), since, until)
	if err != nil {
		c.cfg.Log.Error("console report", "err", err)
		c.fail(w, r, http.StatusServiceUnavailable, err.Error())
		return
	}
	c.render(w, r, http.StatusOK, "reports", page{Title: "Reports", Nav: "reports", Data: reportData{Report: rep, Query: v.Encode()}})
}

// reportsAPI answers GET /reports as JSON, or as CSV with format=csv.
func (c *Console) reportsAPI(w http.ResponseWriter, r *http.Request) {
	v := r.URL.Query()
	format := v.Get("format")
	if v.Has("format") && format != "json" && format != "csv" {
		httpjson.WriteError(w, http.StatusBadRequest, "format", "must be json or csv")
		return
	}
	since, until, err := parsePeriod(v, time.Now().UTC())
	if err != nil {
		httpjson.WriteBadRequest(w, err)
		return
	}
	rep, err := c.report(r.Context(), since, until)
	if err != nil {
		c.unavailable(w, err)
		return
	}
	if format != "csv" {
		httpjson.Write(w, http.StatusOK, rep)
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="report.csv"`)
	writeReportCSV(w, rep)
}

// writeReportCSV writes a route's two periods and then an environment's
// two periods a line each; a figure a scope lacks is empty.
func writeReportCSV(w io.Writer, rep *Report) {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"scope", "name", "period", "since", "until", "requests", "errors", "error_rate", "p50_ms", "p95_ms", "p99_ms",
		"scale_ups", "scale_downs", "cold_starts", "hold_p50_s", "hold_p95_s", "longest_hold_s", "replica_hours", "time_at_zero_s", "rejected_held", "settings_changes"})
	opt := func(v *float64) string {
		if v == nil {
			return ""
		}
		return strconv.FormatFloat(*v, 'g', -1, 64)
	}
	n := func(v int64) string { return strconv.FormatInt(v, 10) }
	periods := func(write func(name string, since, until time.Time, current bool)) {
		write("current", rep.Since, rep.Until, true)
		write("previous", rep.PreviousSince, rep.Since, false)
	}
	for _, row := range rep.Rows {
		periods(func(name string, since, until time.Time, current bool) {
			t := row.Previous
			if current {
				t = row.Current
			}
			_ = cw.Write([]string{"route", row.Route, name, since.Format(time.RFC3339), until.Format(time.RFC3339),
				n(t.Requests), n(t.Errors), opt(t.ErrorRate), opt(t.P50), opt(t.P95), opt(t.P99),
				n(t.ScaleUps), n(t.ScaleDowns), n(t.ColdStarts), opt(t.HoldP50Seconds), opt(t.HoldP95Seconds), opt(t.LongestHoldSeconds),
				opt(t.ReplicaHours), opt(t.TimeAtZeroSeconds), n(t.RejectedHeld), ""})
		})
	}
	for _, row := range rep.Environments {
		periods(func(name string, since, until time.Time, current bool) {
			t := row.Previous
			if current {
				t = row.Current
			}
			_ = cw.Write([]string{"environment", row.Environment, name, since.Format(time.RFC3339), until.Format(time.RFC3339),
				n(t.Requests), n(t.Errors), opt(t.ErrorRate), "", "", "", "", "", "", "", "", "", "", "", n(t.RejectedHeld), n(t.SettingsChanges)})
		})
	}
	cw.Flush()
}
