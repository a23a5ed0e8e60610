package console

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/nemesis-ml/nemesis/extproc/logquery"
	"github.com/nemesis-ml/nemesis/internal/httpjson"
	"github.com/nemesis-ml/nemesis/internal/validation"
)

// filters are the /proxy/logs parameters the requests page passes on: a
// form sends its empty fields too, which mean "any" here.
func filters(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		if len(vs) == 1 && vs[0] == "" {
			continue
		}
		out[k] = vs
	}
	return out
}

type requestsData struct {
	Filters url.Values
	Logs    []logquery.Log
	// Next is the query string of the next page, empty on the last.
	Next string
	// Export is the query string of every matching row, for the export
	// links.
	Export  string
	Summary *Summary
	Error   *validation.FieldError
}

func (c *Console) requestsPage(w http.ResponseWriter, r *http.Request) {
	v := filters(r.URL.Query())
	data := requestsData{Filters: v}
	q, err := logquery.Parse(v)
	if err != nil {
		fe, _ := err.(*validation.FieldError)
		data.Error = fe
		c.render(w, r, http.StatusBadRequest, "requests", page{Title: "Requests", Nav: "requests", Data: data})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	logs, err := c.cfg.Logs.Page(ctx, q)
	if err != nil {
		c.cfg.Log.Error("console requests", "err", err)
		c.fail(w, r, http.StatusServiceUnavailable, "database unavailable")
		return
	}
	if len(logs) > q.Limit {
		logs = logs[:q.Limit]
		last := logs[len(logs)-1]
		next := url.Values{}
		for k, vs := range v {
			next[k] = vs
		}
		next.Set("cursor", logquery.Cursor{Time: last.Timestamp, ID: last.ID}.Encode())
		data.Next = next.Encode()
	}
	export := url.Values{}
	for k, vs := range v {
		if k != "cursor" && k != "limit" {
			export[k] = vs
		}
	}
	if data.Summary, err = c.summary(ctx, q); err != nil {
		c.cfg.Log.Error("console requests summary", "err", err)
		c.fail(w, r, http.StatusServiceUnavailable, "database unavailable")
		return
	}
	data.Logs, data.Export = logs, export.Encode()
	c.render(w, r, http.StatusOK, "requests", page{Title: "Requests", Nav: "requests", Data: data})
}

var csvHeader = []string{
	"id", "timestamp", "client_ip", "target_url", "http_method", "response_status", "latency_ms",
	"environment", "route", "upstream_host", "response_flags", "request_id", "bytes_received", "bytes_sent",
}

func csvRecord(l logquery.Log) []string {
	latency := ""
	if l.LatencyMS != nil {
		latency = strconv.Itoa(int(*l.LatencyMS))
	}
	return []string{
		strconv.FormatInt(l.ID, 10), l.Timestamp.Format(time.RFC3339Nano), l.ClientIP.String(), l.TargetURL, l.HTTPMethod,
		strconv.Itoa(int(l.ResponseStatus)), latency, l.Environment, l.Route, l.UpstreamHost, l.ResponseFlags, l.RequestID,
		strconv.FormatInt(l.BytesReceived, 10), strconv.FormatInt(l.BytesSent, 10),
	}
}

// export streams every row matching the /proxy/logs filters as CSV or
// NDJSON, a page of MaxLimit rows at a time, so that any size fits in
// constant memory. A failure after the first byte can no longer change the
// status: the X-Export-Complete trailer says whether every row was sent.
func (c *Console) export(w http.ResponseWriter, r *http.Request) {
	// An API, not a form: an empty filter is refused as /proxy/logs
	// refuses it (the page's export links carry only the filters set).
	v := r.URL.Query()
	format := v.Get("format")
	v.Del("format")
	if format != "csv" && format != "ndjson" {
		httpjson.WriteError(w, http.StatusBadRequest, "format", "must be csv or ndjson")
		return
	}
	for _, p := range []string{"limit", "cursor"} {
		if v.Has(p) {
			httpjson.WriteError(w, http.StatusBadRequest, p, "an export has every matching row: no "+p)
			return
		}
	}
	q, err := logquery.Parse(v)
	if err != nil {
		httpjson.WriteBadRequest(w, err)
		return
	}
	q.Limit = logquery.MaxLimit
	w.Header().Set("Trailer", "X-Export-Complete")
	if format == "csv" {
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="proxy-logs.csv"`)
	} else {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.Header().Set("Content-Disposition", `attachment; filename="proxy-logs.ndjson"`)
	}
	buf := bufio.NewWriterSize(w, 64<<10)
	cw := csv.NewWriter(buf)
	enc := json.NewEncoder(buf)
	if format == "csv" {
		_ = cw.Write(csvHeader)
	}
	flusher, _ := w.(http.Flusher)
	complete := "true"
	for {
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		logs, err := c.cfg.Logs.Page(ctx, q)
		cancel()
		if err != nil {
			c.cfg.Log.Error("exporting proxy logs", "query", r.URL.RawQuery, "err", err)
			complete = "false"
			break
		}
		more := len(logs) > q.Limit
		if more {
			logs = logs[:q.Limit]
		}
		for _, l := range logs {
			if format == "csv" {
				_ = cw.Write(csvRecord(l))
			} else {
				_ = enc.Encode(l)
			}
		}
		cw.Flush()
		if buf.Flush() != nil {
			return // the client went away
		}
		if flusher != nil {
			flusher.Flush()
		}
		if !more {
			break
		}
		last := logs[len(logs)-1]
		q.After = &logquery.Cursor{Time: last.Timestamp, ID: last.ID}
	}
	w.Header().Set("X-Export-Complete", complete)
}
