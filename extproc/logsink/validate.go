package logsink

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Bounds of a row, checked before it is queued: what proxy_logs' columns
// and indexes hold, and what keeps one row's memory small.
const (
	// MaxURLBytes bounds target_url. Longer URLs are cut at a character
	// boundary and end in TruncatedMarker: the btree indexes on target_url
	// refuse entries past about 2,700 bytes, and one request should not hold
	// a 60 KB string in the queue.
	MaxURLBytes = 2048
	// TruncatedMarker ends a target_url that was cut to MaxURLBytes.
	TruncatedMarker = "...[truncated]"
	// MaxEnvironmentChars and MaxMethodChars are the VARCHAR limits of
	// proxy_logs.environment and http_method (in characters).
	MaxEnvironmentChars = 50
	MaxMethodChars      = 10
	// MaxFieldBytes bounds route, upstream_host, response_flags and
	// request_id, which come from configuration, Envoy or a client header.
	MaxFieldBytes = 1024
)

// Reasons a row is rejected: the label of
// nemesis_proxy_logs_rows_rejected_total and proxy_logs_rejected.reason.
const (
	ReasonEnvironment = "environment"
	ReasonMethod      = "http_method"
	ReasonStatus      = "response_status"
	ReasonText        = "text" // a NUL byte, invalid UTF-8 or an oversized field
	ReasonTimestamp   = "timestamp"
	ReasonNumber      = "number" // negative latency or byte counts
	ReasonClientIP    = "client_ip"
	// ReasonDatabase is a row that passed the checks and PostgreSQL refused.
	ReasonDatabase = "database"
)

// Rejected is a row that is not written to proxy_logs, and why.
type Rejected struct {
	Row    Row    `json:"row"`
	Reason string `json:"reason"`
	Error  string `json:"error"`
}

// Check cuts an oversized URL (reporting whether it did) and returns why
// the row cannot be stored, or nil.
func (r *Row) Check() (truncated bool, rejected *Rejected) {
	if len(r.TargetURL) > MaxURLBytes {
		r.TargetURL = truncate(r.TargetURL, MaxURLBytes-len(TruncatedMarker)) + TruncatedMarker
		truncated = true
	}
	reject := func(reason, format string, args ...any) (bool, *Rejected) {
		return truncated, &Rejected{Row: *r, Reason: reason, Error: fmt.Sprintf(format, args...)}
	}
	for _, f := range []struct {
		name, value string
		max         int
	}{
		{"environment", r.Environment, MaxFieldBytes}, {"target_url", r.TargetURL, MaxURLBytes},
		{"http_method", r.Method, MaxFieldBytes}, {"route", r.Route, MaxFieldBytes},
		{"upstream_host", r.UpstreamHost, MaxFieldBytes}, {"response_flags", r.ResponseFlags, MaxFieldBytes},
		{"request_id", r.RequestID, MaxFieldBytes},
	} {
		switch {
		case strings.IndexByte(f.value, 0) >= 0:
			return reject(ReasonText, "%s holds a NUL byte, which PostgreSQL text cannot", f.name)
		case !utf8.ValidString(f.value):
			return reject(ReasonText, "%s is not valid UTF-8", f.name)
		case len(f.value) > f.max:
			return reject(ReasonText, "%s is %d bytes, more than %d", f.name, len(f.value), f.max)
		}
	}
	if n := utf8.RuneCountInString(r.Environment); n > MaxEnvironmentChars {
		return reject(ReasonEnvironment, "environment is %d characters, more than %d", n, MaxEnvironmentChars)
	}
	if !validMethod(r.Method) {
		return reject(ReasonMethod, "http_method %q is not 1 to %d capital letters", r.Method, MaxMethodChars)
	}
	if r.Status < 0 || r.Status > 999 {
		return reject(ReasonStatus, "response_status %d is not between 0 and 999", r.Status)
	}
	if y := r.Timestamp.Year(); y < 1970 || y > 9999 {
		return reject(ReasonTimestamp, "timestamp %s is not between 1970 and 9999", r.Timestamp.Format("2006-01-02T15:04:05Z07:00"))
	}
	if !r.ClientIP.IsValid() {
		return reject(ReasonClientIP, "client_ip is missing")
	}
	if (r.LatencyMS != nil && *r.LatencyMS < 0) || r.BytesReceived < 0 || r.BytesSent < 0 {
		return reject(ReasonNumber, "latency_ms, bytes_received and bytes_sent must not be negative")
	}
	return truncated, nil
}

// validMethod accepts "" (Envoy saw no method) or 1 to 10 capital letters.
func validMethod(m string) bool {
	if len(m) > MaxMethodChars {
		return false
	}
	for i := range len(m) {
		if m[i] < 'A' || m[i] > 'Z' {
			return false
		}
	}
	return true
}

// truncate cuts s to at most n bytes without splitting a character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// size estimates the memory a row holds, for the queue's byte bound.
func (r *Row) size() int {
	const fixed = 200 // the struct, the latency pointer, slice and string headers
	return fixed + len(r.TargetURL) + len(r.Method) + len(r.Environment) + len(r.Route) +
		len(r.UpstreamHost) + len(r.ResponseFlags) + len(r.RequestID)
}
