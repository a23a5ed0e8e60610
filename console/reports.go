package console

import (
	"context"
	"encoding/csv"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"time"

	"github.com/nemesis-ml/nemesis/internal/httpjson"
	"github.com/nemesis-ml/nemesis/internal/validation"
)

// Report compares each route's figures over a period with the period
// before, from the per-minute rollups and the decision record (no scan of
// proxy_logs).
type Report struct {
	Since         time.Time   `json:"since"`
	Until         time.Time   `json:"until"`
	PreviousSince time.Time   `json:"previous_since"`
	Rows          []ReportRow `json:"rows"`
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
	// LongestHoldSeconds is the longest a wake held its first request.
	LongestHoldSeconds *float64 `json:"longest_hold_seconds"`
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
	until = now
	if s := v.Get("until"); s != "" {
		if until, err = time.Parse(time.RFC3339, s); err != nil {
			return bad("until", "must be an RFC 3339 time like 2026-01-02T15:04:05Z")
		}
	}
	switch p := v.Get("period"); {
	case v.Get("since") != "":
		if p != "" {
			return bad("period", "give a period or since, not both")
		}
		if since, err = time.Parse(time.RFC3339, v.Get("since")); err != nil {
			return bad("since", "must be an RFC 3339 time like 2026-01-02T15:04:05Z")
		}
	case p == "" || p == "day":
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
	byRoute := map[string]*ReportRow{}
	rowOf := func(route string) *ReportRow {
		if r, ok := byRoute[route]; ok {
			return r
		}
		r := &ReportRow{Route: route}
		byRoute[route] = r
		return r
	}
	for i, span := range [][2]time.Time{{since, until}, {previous, since}} {
		pick := func(r *ReportRow) *Totals {
			if i == 0 {
				return &r.Current
			}
			return &r.Previous
		}
		if err := c.reportTraffic(ctx, span[0], span[1], func(route string) *Totals { return pick(rowOf(route)) }); err != nil {
			return nil, err
		}
		if err := c.reportDecisions(ctx, span[0], span[1], func(route string) *Totals { return pick(rowOf(route)) }); err != nil {
			return nil, err
		}
	}
	// An empty report has rows [], not null: the document says array.
	rep.Rows = make([]ReportRow, 0, len(byRoute))
	for _, r := range byRoute {
		rep.Rows = append(rep.Rows, *r)
	}
	sort.Slice(rep.Rows, func(i, j int) bool { return rep.Rows[i].Route < rep.Rows[j].Route })
	return rep, nil
}

// reportTraffic sums the rollups of [since, until) by route; minutes are
// whole, so the bounds are taken to the minute.
func (c *Console) reportTraffic(ctx context.Context, since, until time.Time, totals func(string) *Totals) error {
	since, until = since.Truncate(time.Minute), until.Truncate(time.Minute)
	rows, err := c.cfg.Pool.Query(ctx, `SELECT route, sum(requests)::bigint, sum(errors)::bigint
		FROM proxy_log_minutes WHERE minute >= $1 AND minute < $2 GROUP BY route`, since, until)
	if err != nil {
		return fmt.Errorf("summing proxy log minutes: %w", err)
	}
	for rows.Next() {
		var route string
		var requests, errors int64
		if err := rows.Scan(&route, &requests, &errors); err != nil {
			rows.Close()
			return fmt.Errorf("summing proxy log minutes: %w", err)
		}
		t := totals(route)
		t.Requests, t.Errors = requests, errors
		if requests > 0 {
			rate := float64(errors) / float64(requests)
			t.ErrorRate = &rate
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("summing proxy log minutes: %w", err)
	}
	rows, err = c.cfg.Pool.Query(ctx, `SELECT route, array_agg(total ORDER BY i) FROM (
			SELECT route, i, sum(b)::bigint AS total FROM proxy_log_minutes, unnest(latency_buckets) WITH ORDINALITY AS u(b, i)
			WHERE minute >= $1 AND minute < $2 GROUP BY route, i) AS per_bucket
		GROUP BY route`, since, until)
	if err != nil {
		return fmt.Errorf("summing latency buckets: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var route string
		var b []int64
		if err := rows.Scan(&route, &b); err != nil {
			return fmt.Errorf("summing latency buckets: %w", err)
		}
		t := totals(route)
		t.P50, t.P95, t.P99 = percentileBound(b, 0.50), percentileBound(b, 0.95), percentileBound(b, 0.99)
	}
	return rows.Err()
}

// reportDecisions counts applied scales and wakes of [since, until).
func (c *Console) reportDecisions(ctx context.Context, since, until time.Time, totals func(string) *Totals) error {
	rows, err := c.cfg.Pool.Query(ctx, `SELECT namespace || '/' || name,
			count(*) FILTER (WHERE to_replicas > from_replicas AND NOT dry_run),
			count(*) FILTER (WHERE to_replicas < from_replicas AND NOT dry_run),
			count(*) FILTER (WHERE wake IS NOT NULL),
			max(extract(epoch FROM (wake->>'released')::timestamptz - (wake->>'request_held')::timestamptz)) FILTER (WHERE wake ? 'released')
		FROM scaling_decisions WHERE time >= $1 AND time < $2 GROUP BY 1`, since, until)
	if err != nil {
		return fmt.Errorf("counting decisions: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var route string
		var ups, downs, wakes int64
		var hold *float64
		if err := rows.Scan(&route, &ups, &downs, &wakes, &hold); err != nil {
			return fmt.Errorf("counting decisions: %w", err)
		}
		t := totals(route)
		t.ScaleUps, t.ScaleDowns, t.ColdStarts, t.LongestHoldSeconds = ups, downs, wakes, hold
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
	if format != "" && format != "json" && format != "csv" {
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
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"route", "period", "since", "until", "requests", "errors", "error_rate", "p50_ms", "p95_ms", "p99_ms",
		"scale_ups", "scale_downs", "cold_starts", "longest_hold_s"})
	opt := func(v *float64) string {
		if v == nil {
			return ""
		}
		return strconv.FormatFloat(*v, 'g', -1, 64)
	}
	for _, row := range rep.Rows {
		for _, p := range []struct {
			name         string
			since, until time.Time
			t            Totals
		}{{"current", rep.Since, rep.Until, row.Current}, {"previous", rep.PreviousSince, rep.Since, row.Previous}} {
			_ = cw.Write([]string{row.Route, p.name, p.since.Format(time.RFC3339), p.until.Format(time.RFC3339),
				strconv.FormatInt(p.t.Requests, 10), strconv.FormatInt(p.t.Errors, 10), opt(p.t.ErrorRate), opt(p.t.P50), opt(p.t.P95), opt(p.t.P99),
				strconv.FormatInt(p.t.ScaleUps, 10), strconv.FormatInt(p.t.ScaleDowns, 10), strconv.FormatInt(p.t.ColdStarts, 10), opt(p.t.LongestHoldSeconds)})
		}
	}
	cw.Flush()
}
