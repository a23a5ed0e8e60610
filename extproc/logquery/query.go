// Package logquery serves GET /proxy/logs: proxy_logs rows newest first,
// filtered, in pages linked by an opaque keyset cursor.
package logquery

import (
	"fmt"
	"math"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nemesis-ml/nemesis/internal/keyset"
	"github.com/nemesis-ml/nemesis/internal/validation"
)

// Limits of a page.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// Query is a validated GET /proxy/logs request.
type Query struct {
	Since, Until time.Time // zero: unbounded; Since inclusive, Until exclusive
	TargetURL    string
	TargetPrefix bool // TargetURL ended in "*"
	StatusMin    int  // inclusive; StatusMax exclusive; both 0: any
	StatusMax    int
	Method       string
	ClientIP     netip.Prefix // invalid: any
	MinLatencyMS int          // -1: any
	Environment  string
	Route        string
	Limit        int
	After        *Cursor
}

// Cursor is the last row of a page: the next page starts below it.
type Cursor = keyset.Cursor

// Longest target_url, route and environment a filter may name, in
// characters as the OpenAPI document counts them: longer ones match no
// stored row (the sink cuts URLs to 2 KiB).
const (
	maxURLParam         = 4096
	maxRouteParam       = 1024
	maxEnvironmentParam = 50
)

// checkText says what is wrong with a text parameter that PostgreSQL would
// refuse (a NUL byte, bytes that are not UTF-8) or that can match nothing,
// or returns "".
func checkText(v string, maxChars int) string {
	switch {
	case v == "":
		return "must not be empty"
	case !utf8.ValidString(v):
		return "must be UTF-8 text"
	case utf8.RuneCountInString(v) > maxChars:
		return fmt.Sprintf("must be at most %d characters", maxChars)
	case strings.IndexByte(v, 0) >= 0:
		return "must not hold a NUL character"
	}
	return ""
}

var (
	methodPattern = regexp.MustCompile(`^[A-Z]{1,10}$`)
	statusClass   = regexp.MustCompile(`^([1-5])xx$`)
	// statusCode is 0 to 599 written without a sign or leading zeros, as
	// the OpenAPI document's pattern has it.
	statusCode = regexp.MustCompile(`^(0|[1-9][0-9]?|[1-5][0-9]{2})$`)
)

// Parse validates the query string of GET /proxy/logs. Errors are
// *validation.FieldError naming the parameter.
func Parse(v url.Values) (Query, error) {
	q := Query{Limit: DefaultLimit, MinLatencyMS: -1}
	bad := func(field, format string, args ...any) (Query, error) {
		return Query{}, &validation.FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
	}
	for name, values := range v {
		if len(values) != 1 {
			return bad(name, "must be given once")
		}
		value := values[0]
		switch name {
		case "since", "until":
			t, err := time.Parse(time.RFC3339Nano, value)
			if err != nil {
				return bad(name, "must be an RFC 3339 time like 2026-01-02T15:04:05Z")
			}
			if name == "since" {
				q.Since = t.UTC()
			} else {
				q.Until = t.UTC()
			}
		case "target_url":
			if msg := checkText(value, maxURLParam); msg != "" {
				return bad(name, "%s", msg)
			}
			q.TargetURL, q.TargetPrefix = strings.CutSuffix(value, "*")
		case "status":
			if m := statusClass.FindStringSubmatch(value); m != nil {
				c := int(m[1][0]-'0') * 100
				q.StatusMin, q.StatusMax = c, c+100
				break
			}
			if !statusCode.MatchString(value) {
				return bad(name, "must be a status code (0 for none) or a class like 5xx")
			}
			code, _ := strconv.Atoi(value)
			q.StatusMin, q.StatusMax = code, code+1
		case "method":
			if !methodPattern.MatchString(value) {
				return bad(name, "must be an HTTP method in capitals, like GET")
			}
			q.Method = value
		case "client_ip":
			p, err := netip.ParsePrefix(value)
			if err != nil {
				// A zone (fe80::1%eth0) would be dropped silently: no stored
				// client address has one.
				a, aerr := netip.ParseAddr(value)
				if aerr != nil || a.Zone() != "" {
					return bad(name, "must be an IP address without a zone, or a CIDR block")
				}
				p = netip.PrefixFrom(a, a.BitLen())
			}
			q.ClientIP = p.Masked()
		case "min_latency_ms":
			// latency_ms is an int4: a larger bound is refused here, not
			// by PostgreSQL as a failed query.
			n, err := strconv.ParseInt(value, 10, 32)
			if err != nil || n < 0 {
				return bad(name, "must be a whole number of milliseconds from 0 to %d", math.MaxInt32)
			}
			q.MinLatencyMS = int(n)
		case "environment":
			if msg := checkText(value, maxEnvironmentParam); msg != "" {
				return bad(name, "%s", msg)
			}
			q.Environment = value
		case "route":
			if msg := checkText(value, maxRouteParam); msg != "" {
				return bad(name, "%s", msg)
			}
			q.Route = value
		case "limit":
			n, err := strconv.Atoi(value)
			if err != nil || n < 1 || n > MaxLimit {
				return bad(name, "must be between 1 and %d", MaxLimit)
			}
			q.Limit = n
		case "cursor":
			c, err := keyset.Decode(value)
			if err != nil {
				return bad(name, "is not a cursor this API returned")
			}
			q.After = c
		default:
			return bad(name, "unknown parameter")
		}
	}
	// until at or before since is an empty window, answered with no rows
	// rather than refused: the OpenAPI document cannot say that one
	// parameter must follow another, so a client could not know to avoid it.
	return q, nil
}

// SQL returns the statement and arguments that select the page, plus one
// row to tell whether another page follows.
func (q Query) SQL() (string, []any) {
	where, args := q.Where()
	sql := "SELECT " + strings.Join(columns, ", ") + " FROM proxy_logs"
	if where != "" {
		sql += " WHERE " + where
	}
	args = append(args, q.Limit+1)
	sql += fmt.Sprintf(" ORDER BY timestamp DESC, id DESC LIMIT $%d", len(args))
	return sql, args
}

// Where returns the filters (and the cursor) as a WHERE condition over
// proxy_logs with its arguments ($1…), empty when there is none; the
// console's charts aggregate the same rows a page lists.
func (q Query) Where() (string, []any) {
	var where []string
	var args []any
	add := func(cond string, arg any) {
		args = append(args, arg)
		where = append(where, strings.ReplaceAll(cond, "$?", "$"+strconv.Itoa(len(args))))
	}
	if !q.Since.IsZero() {
		add("timestamp >= $?", q.Since)
	}
	if !q.Until.IsZero() {
		add("timestamp < $?", q.Until)
	}
	if q.TargetURL != "" {
		if q.TargetPrefix {
			add("target_url LIKE $?", likePrefix(q.TargetURL))
		} else {
			add("target_url = $?", q.TargetURL)
		}
	}
	if q.StatusMax > 0 {
		if q.StatusMax-q.StatusMin == 1 {
			add("response_status = $?", q.StatusMin)
		} else {
			add("response_status >= $?", q.StatusMin)
			add("response_status < $?", q.StatusMax)
		}
	}
	if q.Method != "" {
		add("http_method = $?", q.Method)
	}
	if q.ClientIP.IsValid() {
		if q.ClientIP.IsSingleIP() {
			add("client_ip = $?", q.ClientIP.Addr())
		} else {
			add("client_ip <<= $?", q.ClientIP)
		}
	}
	if q.MinLatencyMS >= 0 {
		add("latency_ms >= $?", q.MinLatencyMS)
	}
	if q.Environment != "" {
		add("environment = $?", q.Environment)
	}
	if q.Route != "" {
		add("route = $?", q.Route)
	}
	if q.After != nil {
		// Spelt out rather than (timestamp, id) < (t, id) so that the
		// timestamp bound is an index condition.
		args = append(args, q.After.Time, q.After.ID)
		t, id := len(args)-1, len(args)
		where = append(where, fmt.Sprintf("timestamp <= $%d AND (timestamp < $%d OR id < $%d)", t, t, id))
	}
	return strings.Join(where, " AND "), args
}

// likePrefix escapes LIKE's wildcards in p and appends one.
func likePrefix(p string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(p) + "%"
}
