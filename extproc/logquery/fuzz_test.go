package logquery

import (
	"math"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzParse: any query string either parses into a query whose statement
// has an argument for every placeholder and only values PostgreSQL takes,
// or is refused naming a parameter.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"", "status=5xx&method=POST&limit=10", "client_ip=10.213.0.0/16&target_url=http://h/a_b*",
		"min_latency_ms=3000000000", "since=2026-01-01T00:00:00Z&until=2026-01-02T00:00:00Z",
		"cursor=" + (Cursor{Time: time.Unix(5, 1000), ID: 9}).Encode(), "route=a%00b", "environment=%FF",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := Parse(v)
		if err != nil {
			return
		}
		sql, args := q.SQL()
		if n := strings.Count(sql, "$"); n < len(args) {
			t.Fatalf("%d placeholders for %d arguments: %s", n, len(args), sql)
		}
		for _, a := range args {
			if s, ok := a.(string); ok && (strings.ContainsRune(s, 0) || !utf8.ValidString(s)) {
				t.Fatalf("argument %q is text PostgreSQL refuses", s)
			}
		}
		if q.MinLatencyMS > math.MaxInt32 || q.Limit < 1 || q.Limit > MaxLimit {
			t.Fatalf("out of range: %+v", q)
		}
	})
}
