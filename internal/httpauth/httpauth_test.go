package httpauth

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestRequire(t *testing.T) {
	a := &Authorizer{}
	if err := a.Grant([]string{"writer"}, SettingsWrite, Read); err != nil {
		t.Fatal(err)
	}
	if err := a.Grant([]string{"reader-old", "reader-new"}, Read); err != nil {
		t.Fatal(err)
	}
	if err := a.Grant([]string{"sidecar"}, MetricsIngest); err != nil {
		t.Fatal(err)
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	for name, tc := range map[string]struct {
		header string
		scope  Scope
		want   int
	}{
		"no header":                      {"", Read, http.StatusUnauthorized},
		"not a bearer":                   {"Basic d3JpdGVy", Read, http.StatusUnauthorized},
		"empty bearer":                   {"Bearer ", Read, http.StatusUnauthorized},
		"unknown token":                  {"Bearer nope", Read, http.StatusUnauthorized},
		"prefix of a token":              {"Bearer write", Read, http.StatusUnauthorized},
		"writer writes":                  {"Bearer writer", SettingsWrite, http.StatusNoContent},
		"writer reads":                   {"Bearer writer", Read, http.StatusNoContent},
		"writer cannot ingest":           {"Bearer writer", MetricsIngest, http.StatusForbidden},
		"reader cannot write":            {"Bearer reader-old", SettingsWrite, http.StatusForbidden},
		"second reader token reads":      {"Bearer reader-new", Read, http.StatusNoContent},
		"sidecar ingests":                {"Bearer sidecar", MetricsIngest, http.StatusNoContent},
		"sidecar cannot read proxy logs": {"Bearer sidecar", Read, http.StatusForbidden},
	} {
		t.Run(name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/x", nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			rec := httptest.NewRecorder()
			a.Require(tc.scope, ok).ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.want, rec.Body)
			}
			if tc.want == http.StatusNoContent {
				return
			}
			var body struct{ Error, Field string }
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Field != "Authorization" || body.Error == "" {
				t.Fatalf("body %s (%v): want an error naming Authorization", rec.Body, err)
			}
			if tc.want == http.StatusUnauthorized && rec.Header().Get("WWW-Authenticate") == "" {
				t.Fatal("401 without a WWW-Authenticate challenge")
			}
		})
	}
}

func TestGrantRefusesEmptyTokens(t *testing.T) {
	for _, tokens := range [][]string{{""}, {"a", " "}} {
		if err := (&Authorizer{}).Grant(tokens, Read); err == nil {
			t.Fatalf("%q granted", tokens)
		}
	}
}

func TestZeroValueRefusesAndOpenAllows(t *testing.T) {
	req := httptest.NewRequest(http.MethodGet, "/x", nil)
	req.Header.Set("Authorization", "Bearer anything")
	if got := (&Authorizer{}).Allowed(req, Read); got != http.StatusUnauthorized {
		t.Fatalf("zero authorizer: %d", got)
	}
	if got := Open().Allowed(httptest.NewRequest(http.MethodGet, "/x", nil), SettingsWrite); got != 0 {
		t.Fatalf("open authorizer: %d", got)
	}
}
