package logsink

import (
	"net/netip"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestCheck(t *testing.T) {
	good := rows(0, 1)[0]
	negative := int32(-1)
	for name, tc := range map[string]struct {
		change func(r *Row)
		reason string // "" when the row passes
		cut    bool
	}{
		"good":                 {change: func(*Row) {}},
		"no method":            {change: func(r *Row) { r.Method = "" }},
		"no response":          {change: func(r *Row) { r.Status = 0 }},
		"environment of 50":    {change: func(r *Row) { r.Environment = strings.Repeat("é", 50) }},
		"environment of 51":    {change: func(r *Row) { r.Environment = strings.Repeat("e", 51) }, reason: ReasonEnvironment},
		"NUL in url":           {change: func(r *Row) { r.TargetURL += "\x00" }, reason: ReasonText},
		"NUL in request id":    {change: func(r *Row) { r.RequestID = "a\x00b" }, reason: ReasonText},
		"invalid UTF-8":        {change: func(r *Row) { r.Route = "\xff" }, reason: ReasonText},
		"long request id":      {change: func(r *Row) { r.RequestID = strings.Repeat("r", MaxFieldBytes+1) }, reason: ReasonText},
		"lower-case method":    {change: func(r *Row) { r.Method = "get" }, reason: ReasonMethod},
		"long method":          {change: func(r *Row) { r.Method = "PROPPATCHES" }, reason: ReasonMethod},
		"status 1000":          {change: func(r *Row) { r.Status = 1000 }, reason: ReasonStatus},
		"negative status":      {change: func(r *Row) { r.Status = -1 }, reason: ReasonStatus},
		"year 10000":           {change: func(r *Row) { r.Timestamp = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, reason: ReasonTimestamp},
		"zero time":            {change: func(r *Row) { r.Timestamp = time.Time{} }, reason: ReasonTimestamp},
		"negative latency":     {change: func(r *Row) { r.LatencyMS = &negative }, reason: ReasonNumber},
		"negative bytes":       {change: func(r *Row) { r.BytesSent = -1 }, reason: ReasonNumber},
		"no client ip":         {change: func(r *Row) { r.ClientIP = netip.Addr{} }, reason: ReasonClientIP},
		"long url":             {change: func(r *Row) { r.TargetURL += strings.Repeat("u", 60<<10) }, cut: true},
		"long url and bad env": {change: func(r *Row) { r.TargetURL += strings.Repeat("u", 4000); r.Environment = strings.Repeat("e", 51) }, cut: true, reason: ReasonEnvironment},
		"long multibyte url":   {change: func(r *Row) { r.TargetURL += strings.Repeat("€", 1000) }, cut: true},
	} {
		t.Run(name, func(t *testing.T) {
			r := good
			tc.change(&r)
			cut, rj := r.Check()
			if cut != tc.cut {
				t.Fatalf("truncated %v, want %v", cut, tc.cut)
			}
			switch {
			case tc.reason == "" && rj != nil:
				t.Fatalf("rejected: %+v", rj)
			case tc.reason != "" && (rj == nil || rj.Reason != tc.reason || rj.Error == ""):
				t.Fatalf("got %+v, want rejected for %s", rj, tc.reason)
			}
			if cut && (len(r.TargetURL) != MaxURLBytes && len(r.TargetURL) > MaxURLBytes || !strings.HasSuffix(r.TargetURL, TruncatedMarker) || !utf8.ValidString(r.TargetURL)) {
				t.Fatalf("cut URL is %d bytes, valid UTF-8 %v, ends %q", len(r.TargetURL), utf8.ValidString(r.TargetURL), r.TargetURL[len(r.TargetURL)-20:])
			}
		})
	}
}
