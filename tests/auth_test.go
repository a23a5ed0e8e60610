package tests

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Every HTTP API of serve needs a token with its scope; only the probes and
// the OpenAPI document are public.
func TestEveryAPIRefusesWithoutTokenOrWithTheWrongScope(t *testing.T) {
	s := newStack(t)
	sample := `[{"id":"` + s.namespace + `/p","cpuUsage":1,"receivedAt":"` + time.Now().UTC().Format(time.RFC3339) + `"}]`
	settings := `{"environment":"` + s.env + `","policy":"random","max_connections":5,"timeout_seconds":5}`
	for _, e := range []struct {
		method, path, body string
		wrongScope         string // a valid token of another role
	}{
		{http.MethodGet, "/loadbalancer/settings?environment=" + s.env, "", metricsToken},
		{http.MethodPut, "/loadbalancer/settings", settings, readToken},
		{http.MethodPut, "/loadbalancer/settings", settings, metricsToken},
		{http.MethodGet, "/loadbalancer/settings/history?environment=" + s.env, "", metricsToken},
		{http.MethodGet, "/loadbalancer/status", "", metricsToken},
		{http.MethodGet, "/proxy/logs", "", metricsToken},
		{http.MethodGet, "/metrics", "", metricsToken},
		{http.MethodPost, "/metrics", sample, token},
		{http.MethodPost, "/metrics", sample, readToken},
	} {
		name := e.method + " " + e.path
		if code, body := s.request(e.method, e.path, e.body, ""); code != http.StatusUnauthorized {
			t.Errorf("%s without a token: %d %s, want 401", name, code, body)
		}
		if code, body := s.request(e.method, e.path, e.body, "not-a-token"); code != http.StatusUnauthorized {
			t.Errorf("%s with an unknown token: %d %s, want 401", name, code, body)
		}
		if code, body := s.request(e.method, e.path, e.body, e.wrongScope); code != http.StatusForbidden || !strings.Contains(body, "scope") {
			t.Errorf("%s with another role's token: %d %s, want 403 naming the scope", name, code, body)
		}
	}
	// Nothing the refused calls sent was stored.
	if _, body := s.request(http.MethodGet, "/loadbalancer/settings/history?environment="+s.env, "", readToken); body != "[]\n" {
		t.Errorf("history after refused PUTs: %s", body)
	}
	for _, path := range []string{"/healthz", "/readyz", "/openapi.json"} {
		if code, body := s.request(http.MethodGet, path, "", ""); code != http.StatusOK {
			t.Errorf("GET %s without a token: %d %s, want 200", path, code, body)
		}
	}
	if code, body := s.request(http.MethodPost, "/metrics", sample, metricsToken); code != http.StatusOK {
		t.Errorf("POST /metrics with the metrics token: %d %s", code, body)
	}
}

func TestServeRefusesToStartWithoutTokens(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for name, args := range map[string][]string{
		"no token":         {"serve"},
		"no metrics token": {"serve", "--token", "a"},
		"empty token":      {"serve", "--token", ",", "--metrics-token", "b"},
	} {
		cmd := exec.CommandContext(ctx, nemesisBin, args...)
		// Only the flags: no token may come from this process's environment.
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "--token") {
			t.Errorf("%s: serve %v: err %v, output %s; want it to exit naming the missing token", name, args, err, out)
		}
		if name == "no token" && !strings.Contains(string(out), "--insecure-no-auth") {
			t.Errorf("the refusal does not say how to run without authentication: %s", out)
		}
	}
}
