package api

import (
	"encoding/json"
	"errors"
	"net/http/httptest"
	"net/url"
	"regexp"
	"testing"
	"time"

	"github.com/nemesis-ml/nemesis/internal/openapi"
	"github.com/nemesis-ml/nemesis/internal/validation"
)

// TestTimeoutIsWhatTheDocumentSays accepts exactly the timeouts that the
// OpenAPI document's pattern allows.
func TestTimeoutIsWhatTheDocumentSays(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]struct {
			Parameters []struct {
				Name   string `json:"name"`
				Schema struct {
					Pattern string `json:"pattern"`
				} `json:"schema"`
			} `json:"parameters"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(openapi.Serve(), &doc); err != nil {
		t.Fatal(err)
	}
	var pattern *regexp.Regexp
	for _, p := range doc.Paths["/loadbalancer/settings"]["put"].Parameters {
		if p.Name == "timeout" {
			pattern = regexp.MustCompile(p.Schema.Pattern)
		}
	}
	if pattern == nil {
		t.Fatal("the document declares no pattern for timeout")
	}
	for _, v := range []string{"1ms", "999ms", "99999ms", "100000ms", "119999ms", "120000ms", "120001ms", "0ms",
		"1s", "20s", "99s", "119s", "120s", "121s", "1m", "2m", "3m", "0s", "05s", "+5s", "-5s", "1.5s", "1m30s",
		"5", "5S", "10h", "", "soon"} {
		_, timeout, err := waitParams(httptest.NewRequest("PUT", "/loadbalancer/settings?wait=ack&timeout="+url.QueryEscape(v), nil))
		if accepted := err == nil; accepted != pattern.MatchString(v) {
			t.Errorf("timeout=%q: accepted %v (%v), the document's pattern says %v", v, accepted, err, !accepted)
		}
		if err == nil && (timeout <= 0 || timeout > 2*time.Minute) {
			t.Errorf("timeout=%q read as %s", v, timeout)
		}
	}
}

func TestWaitParamsRefuseEmptyValues(t *testing.T) {
	for query, want := range map[string]struct {
		wait    bool
		timeout time.Duration
		field   string
	}{
		"":                        {},
		"wait=ack":                {wait: true, timeout: defaultAckTimeout},
		"wait=ack&timeout=1500ms": {wait: true, timeout: 1500 * time.Millisecond},
		"wait=":                   {field: "wait"},
		"wait=yes":                {field: "wait"},
		"wait=ack&timeout=":       {field: "timeout"},
		"timeout=5s":              {},
	} {
		wait, timeout, err := waitParams(httptest.NewRequest("PUT", "/loadbalancer/settings?"+query, nil))
		var fe *validation.FieldError
		switch {
		case want.field != "" && (!errors.As(err, &fe) || fe.Field != want.field):
			t.Errorf("%q: %v, want an error naming %s", query, err, want.field)
		case want.field == "" && (err != nil || wait != want.wait || timeout != want.timeout):
			t.Errorf("%q: %v %s %v, want %v %s", query, wait, timeout, err, want.wait, want.timeout)
		}
	}
}

func TestEnvironmentParamRefusesEmpty(t *testing.T) {
	for query, want := range map[string]string{"": "default", "environment=prod": "prod", "environment=": "", "environment=Prod": ""} {
		q, _ := url.ParseQuery(query)
		env, err := environmentParam(q)
		if env != want || (want == "") != (err != nil) {
			t.Errorf("%q: %q %v, want %q", query, env, err, want)
		}
	}
}

func TestPutRequestReadsWholeNumbersAndRefusesNulls(t *testing.T) {
	for body, field := range map[string]string{
		`{"policy":"random","max_connections":100.0,"timeout_seconds":1e1}`:                "",
		`{"environment":"prod","policy":"random","max_connections":5,"timeout_seconds":5}`: "",
		`{"environment":null,"policy":"random","max_connections":5,"timeout_seconds":5}`:   "environment",
		`{"environment":3,"policy":"random","max_connections":5,"timeout_seconds":5}`:      "environment",
		`{"policy":"random","max_connections":null,"timeout_seconds":5}`:                   "max_connections",
		`{"policy":"random","max_connections":"5","timeout_seconds":5}`:                    "max_connections",
		`{"policy":"random","max_connections":1.5,"timeout_seconds":5}`:                    "max_connections",
		`{"policy":"random","max_connections":5,"timeout_seconds":1e400}`:                  "timeout_seconds",
		`{"policy":"random","max_connections":5,"timeout_seconds":99999999999}`:            "timeout_seconds",
		`{"policy":"random","max_connections":5}`:                                          "timeout_seconds",
	} {
		var req putRequest
		if err := json.Unmarshal([]byte(body), &req); err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		s, err := req.settings()
		var fe *validation.FieldError
		switch {
		case field == "" && err != nil:
			t.Errorf("%s: %v", body, err)
		case field != "" && (!errors.As(err, &fe) || fe.Field != field):
			t.Errorf("%s: %v, want an error naming %s", body, err, field)
		case field == "" && (s.MaxConnections <= 0 || s.TimeoutSeconds <= 0):
			t.Errorf("%s: read as %+v", body, s)
		}
	}
}
