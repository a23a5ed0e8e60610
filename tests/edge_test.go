package tests

import (
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

// Envoy is the edge: what a client writes in X-Forwarded-For or x-envoy-*
// headers neither names the client in the proxy logs nor changes how Envoy
// routes; with --proxy-log-drop-query no query string is logged.
func TestClientHeadersDoNotOverrideTheEdge(t *testing.T) {
	s := newStack(t, "--proxy-log-flush-interval", "200ms", "--proxy-log-drop-query")
	host := testenv.NewHost(t)
	backends := startBackends(t, host, "slow")
	backends[0].delay.Store(int64(3 * time.Second))
	s.publish("demo", "/models/demo", backends)
	envoy := s.startEnvoy()
	s.waitHosts(envoy, s.namespace+"/demo", 1)
	s.mustPut("round_robin", 100, 1)

	send := func(path string, header http.Header) (int, time.Duration) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", s.envoyPort, path), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header = header
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode, time.Since(start)
	}
	// The route's timeout is 1 s and the model takes 3 s: a client on
	// this machine (an address Envoy would call internal) asking for 10 s
	// and retries gets neither.
	code, took := send("/models/demo/slow", http.Header{
		"X-Envoy-Upstream-Rq-Timeout-Ms": {"10000"},
		"X-Envoy-Retry-On":               {"5xx"},
		"X-Envoy-Max-Retries":            {"3"},
	})
	if code != http.StatusGatewayTimeout || took > 2500*time.Millisecond {
		t.Fatalf("with x-envoy-upstream-rq-timeout-ms: 10000: %d after %s, want 504 after the route's 1 s", code, took)
	}
	if attempts := backends[0].served.Load() + backends[0].active.Load(); attempts > 1 {
		t.Fatalf("the model saw %d attempts: the client's retry headers were honoured", attempts)
	}
	backends[0].delay.Store(0)
	if code, _ := send("/models/demo/predict?api_key=secret", http.Header{"X-Forwarded-For": {"203.0.113.9"}}); code != http.StatusOK {
		t.Fatalf("with X-Forwarded-For: %d", code)
	}
	s.waitLogs(2, 20*time.Second)
	logs, _ := s.logs("", 10)
	if len(logs) != 2 {
		t.Fatalf("%d rows, want 2", len(logs))
	}
	l := logs[0] // newest first
	if l.ClientIP != "127.0.0.1" {
		t.Errorf("client_ip %s: the X-Forwarded-For the client sent, not its address 127.0.0.1", l.ClientIP)
	}
	if l.TargetURL != "http://"+backends[0].addr+"/models/demo/predict" {
		t.Errorf("target_url %s, want it without the query string", l.TargetURL)
	}
	if logs[1].ResponseStatus != http.StatusGatewayTimeout {
		t.Errorf("the slow request is logged with %d, want 504", logs[1].ResponseStatus)
	}
}
