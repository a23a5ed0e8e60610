package tests

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

// Envoy retries a request that never reached a pod (here: a refused
// connection) on another one, and never one that reached a pod (here: a
// pod that reads the request and resets the connection), so a model never
// runs a request twice; retry_attempts 0 turns retries off.
func TestRetriesOnlyWhatNeverReachedAPod(t *testing.T) {
	s := newStack(t)
	envoy := s.startEnvoy()
	s.waitConnected(1)
	host := testenv.NewHost(t)
	live := startBackends(t, host, "live")[0]
	dead := deadBackend(t, host)
	s.publish("retry", "/retry", []*backend{live, dead})
	cluster := s.namespace + "/retry"
	s.waitHosts(envoy, cluster, 2)
	url := fmt.Sprintf("http://127.0.0.1:%d/retry", s.envoyPort)

	if counts := countOf(sequence(t, url, 40)); counts["live"] != 40 {
		t.Fatalf("answers %v, want 40 from live", counts)
	}
	retried := envoyStat(t, envoy, "cluster."+cluster+".upstream_rq_retry")
	if retried == 0 {
		t.Fatal("no request was retried though half went to a refused port")
	}
	t.Logf("40 requests beside a refused port: all answered, %d retried", retried)

	s.removeSlice("retry", dead)
	breaker := resetBackend(t, host)
	s.addSlice("retry", breaker.backend)
	s.waitHosts(envoy, cluster, 2)
	counts := concurrently(url, 1, 40)
	if failed := 40 - counts["200 live"]; failed == 0 || int64(failed) != breaker.received.Load() {
		t.Fatalf("answers %v: the resetting pod received %d requests, want one per failed request", counts, breaker.received.Load())
	}
	t.Logf("a pod that resets after reading the request: %v, each failed request received once", counts)

	s.removeSlice("retry", breaker.backend)
	s.addSlice("retry", dead)
	s.waitHosts(envoy, cluster, 2)
	if code, body := s.put(fmt.Sprintf(`{"environment":%q,"policy":"round_robin","max_connections":100,"timeout_seconds":5,"retry_attempts":0}`, s.env)); code != http.StatusOK {
		t.Fatalf("PUT retry_attempts 0: %d %s", code, body)
	}
	_, body := s.request(http.MethodGet, "/loadbalancer/settings?environment="+s.env, "", readToken)
	got := decode[struct {
		RetryAttempts      *int `json:"retry_attempts"`
		RetryBudgetPercent int  `json:"retry_budget_percent"`
		StreamIdleTimeout  int  `json:"stream_idle_timeout_seconds"`
	}](t, body)
	if got.RetryAttempts == nil || *got.RetryAttempts != 0 || got.RetryBudgetPercent != 20 || got.StreamIdleTimeout != 300 {
		t.Fatalf("settings read back %s, want retries off and the defaults for the rest", body)
	}
	counts = concurrently(url, 1, 40)
	if counts["200 live"] == 40 {
		t.Fatalf("answers %v with retries off, want the refused ones to fail", counts)
	}
	t.Logf("retries off: %v", counts)
}

// deadBackend is an address of host where nothing listens.
func deadBackend(t *testing.T, host *testenv.Host) *backend {
	t.Helper()
	l := host.Listen(t)
	b := &backend{name: "dead", addr: l.Addr().String()}
	_, port, _ := net.SplitHostPort(b.addr)
	p, _ := strconv.Atoi(port)
	b.port = int32(p)
	_ = l.Close()
	return b
}

// resetter reads each request and resets the connection without answering.
type resetter struct {
	*backend
	received atomic.Int64
}

func resetBackend(t *testing.T, host *testenv.Host) *resetter {
	t.Helper()
	l := host.Listen(t)
	r := &resetter{backend: &backend{name: "reset", addr: l.Addr().String()}}
	_, port, _ := net.SplitHostPort(r.addr)
	p, _ := strconv.Atoi(port)
	r.port = int32(p)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				r.received.Add(1)
				// RST, not FIN: the request is lost mid-way.
				_ = c.(*net.TCPConn).SetLinger(0)
			}()
		}
	}()
	return r
}
