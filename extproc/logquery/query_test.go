package logquery

import (
	"encoding/json"
	"errors"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nemesis-ml/nemesis/internal/openapi"
	"github.com/nemesis-ml/nemesis/internal/validation"
)

func TestParseRefusesNamingTheParameter(t *testing.T) {
	for query, field := range map[string]string{
		"since=yesterday":           "since",
		"until=2026-01-01":          "until",
		"min_latency_ms=2147483648": "min_latency_ms",
		"route=":                    "route",
		"route=a%00b":               "route",
		"route=%FF":                 "route",
		"target_url=http://a/%00":   "target_url",
		"environment=%00":           "environment",
		"environment=" + strings.Repeat("é", 51): "environment",
		"status=6xx":                             "status",
		"status=600":                             "status",
		"status=abc":                             "status",
		"status=007":                             "status",
		"status=+5":                              "status",
		"method=get":                             "method",
		"client_ip=10.0.0.300":                   "client_ip",
		"client_ip=fe80::1%25eth0":               "client_ip",
		"min_latency_ms=-1":                      "min_latency_ms",
		"limit=0":                                "limit",
		"limit=1001":                             "limit",
		"cursor=%21%21":                          "cursor",
		"cursor=bm90LWEtY3Vyc29y":                "cursor",
		"environment=" + strings.Repeat("e", 51): "environment",
		"target_url=":                            "target_url",
		"colour=blue":                            "colour",
		"method=GET&method=POST":                 "method",
		"min_latency_ms=3000000000":              "min_latency_ms",
		"cursor=" + (Cursor{Time: time.Unix(5, 0), ID: 0}).Encode():                              "cursor",
		"cursor=" + (Cursor{Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), ID: 1}).Encode(): "cursor",
	} {
		v, err := url.ParseQuery(query)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Parse(v)
		var fe *validation.FieldError
		if !errors.As(err, &fe) || fe.Field != field {
			t.Errorf("%s: error %v, want one naming %q", query, err, field)
		}
	}
}

func TestSQL(t *testing.T) {
	for query, want := range map[string]struct {
		sql  string
		args int
	}{
		"": {"SELECT * FROM proxy_logs ORDER BY timestamp DESC, id DESC LIMIT $1", 1},
		"status=5xx&method=POST&limit=10": {
			"SELECT * FROM proxy_logs WHERE response_status >= $1 AND response_status < $2 AND http_method = $3 ORDER BY timestamp DESC, id DESC LIMIT $4", 4},
		"status=0&client_ip=10.213.0.0/16&target_url=http://h/a_b*": {
			"SELECT * FROM proxy_logs WHERE target_url LIKE $1 AND response_status = $2 AND client_ip <<= $3 ORDER BY timestamp DESC, id DESC LIMIT $4", 4},
		// An empty window is a query that selects nothing, not an error.
		"since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z": {
			"SELECT * FROM proxy_logs WHERE timestamp >= $1 AND timestamp < $2 ORDER BY timestamp DESC, id DESC LIMIT $3", 3},
		"client_ip=10.0.0.1&since=2026-01-01T00:00:00Z&cursor=" + (Cursor{Time: time.Unix(5, 1000), ID: 9}).Encode(): {
			"SELECT * FROM proxy_logs WHERE timestamp >= $1 AND client_ip = $2 AND timestamp <= $3 AND (timestamp < $3 OR id < $4) ORDER BY timestamp DESC, id DESC LIMIT $5", 5},
	} {
		v, _ := url.ParseQuery(query)
		q, err := Parse(v)
		if err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		sql, args := q.SQL()
		sql = strings.Replace(sql, strings.Join(columns, ", "), "*", 1)
		if sql != want.sql || len(args) != want.args {
			t.Errorf("%s:\n got %s (%d args)\nwant %s (%d args)", query, sql, len(args), want.sql, want.args)
		}
		if len(args) > 0 && args[len(args)-1] != q.Limit+1 {
			t.Errorf("%s: limit argument %v, want %d", query, args[len(args)-1], q.Limit+1)
		}
	}
}

func TestLikePrefixEscapesWildcards(t *testing.T) {
	if got := likePrefix(`http://h/a_b%c\d`); got != `http://h/a\_b\%c\\d%` {
		t.Fatalf("got %s", got)
	}
}

// documentPatterns returns the patterns that the OpenAPI document gives the
// /proxy/logs parameter name, its own and those of its anyOf branches.
func documentPatterns(t *testing.T, name string) []*regexp.Regexp {
	t.Helper()
	type schema struct {
		Pattern string   `json:"pattern"`
		AnyOf   []schema `json:"anyOf"`
	}
	var doc struct {
		Paths map[string]map[string]struct {
			Parameters []struct {
				Name   string `json:"name"`
				Schema schema `json:"schema"`
			} `json:"parameters"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(openapi.Serve(), &doc); err != nil {
		t.Fatal(err)
	}
	var out []*regexp.Regexp
	for _, p := range doc.Paths["/proxy/logs"]["get"].Parameters {
		if p.Name != name {
			continue
		}
		for _, s := range append([]schema{p.Schema}, p.Schema.AnyOf...) {
			if s.Pattern != "" {
				out = append(out, regexp.MustCompile(s.Pattern))
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("the document declares no pattern for %s", name)
	}
	return out
}

// TestStatusIsWhatTheDocumentSays accepts exactly the status filters that
// the OpenAPI document's pattern allows.
func TestStatusIsWhatTheDocumentSays(t *testing.T) {
	pattern := documentPatterns(t, "status")[0]
	for _, v := range []string{"0", "1", "9", "10", "99", "100", "404", "599", "600", "999", "1000", "00", "007", "+5", "-1",
		"1xx", "5xx", "0xx", "6xx", "5XX", "xx", ""} {
		_, err := Parse(url.Values{"status": {v}})
		if accepted := err == nil; accepted != pattern.MatchString(v) {
			t.Errorf("status=%q: accepted %v (%v), the document's pattern says %v", v, accepted, err, !accepted)
		}
	}
}

// TestClientIPBlocksAreWhatTheDocumentSays accepts the CIDR blocks that the
// document's patterns allow and refuses what is not an address either.
func TestClientIPBlocksAreWhatTheDocumentSays(t *testing.T) {
	patterns := documentPatterns(t, "client_ip")
	for _, v := range []string{"10.0.0.0/8", "0.0.0.0/0", "255.255.255.255/32", "10.0.0.0/33", "10.0.0.0/08", "010.0.0.0/8",
		"10.0.0/8", "2001:db8::/32", "::/0", "1:2:3:4:5:6:7:8/128", "1:2:3:4:5:6:7::/64", "::1/129", "2001:db8::/032",
		"fe80::1%eth0/64", "2001:db8:::/32", "g::/8", "/8", "10.0.0.0/"} {
		matched := slices.ContainsFunc(patterns, func(p *regexp.Regexp) bool { return p.MatchString(v) })
		if _, err := Parse(url.Values{"client_ip": {v}}); (err == nil) != matched {
			t.Errorf("client_ip=%q: accepted %v (%v), the document's patterns say %v", v, err == nil, err, matched)
		}
	}
}
