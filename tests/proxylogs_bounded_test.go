package tests

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

// TestSlowLogQueriesLeaveReadinessAndWritersAlone sends 30 slow
// /proxy/logs queries at once: they queue for the query pool's two
// connections (and would time out there, answering 503), while /readyz
// stays ready and Envoy's rows keep landing through the writers' pool.
func TestSlowLogQueriesLeaveReadinessAndWritersAlone(t *testing.T) {
	s := newStack(t, "--proxy-log-flush-interval", "200ms", "--proxy-log-query-connections", "2")
	// Half a million rows whose filters each match half the table and
	// together none: the planner's best is a long index walk.
	testenv.Exec(t, s.dbURL, `INSERT INTO proxy_logs (timestamp, client_ip, target_url, http_method, response_status, latency_ms)
		SELECT timestamp '2026-01-01' + i * interval '1 second', '10.0.0.1', 'http://filler/' || i,
			CASE WHEN i % 2 = 0 THEN 'GET' ELSE 'POST' END, CASE WHEN i % 2 = 0 THEN 200 ELSE 500 END, 5
		FROM generate_series(1, 500000) i`)
	testenv.Exec(t, s.dbURL, `ANALYZE proxy_logs`)
	backends := startStatusBackends(t, testenv.NewHost(t), "a")
	s.publish("demo", "/models/demo", backends)
	envoy := s.startEnvoy()
	s.waitHosts(envoy, s.namespace+"/demo", 1)
	base := fmt.Sprintf("http://127.0.0.1:%d", s.envoyPort)

	slow := "/proxy/logs?method=GET&status=500&client_ip=10.0.0.0/8&min_latency_ms=0"
	var wg sync.WaitGroup
	var answered, timedOut atomic.Int64
	start := time.Now()
	for range 30 {
		wg.Go(func() {
			code, body := s.request(http.MethodGet, slow, "", readToken)
			switch code {
			case http.StatusOK:
				answered.Add(1)
			case http.StatusServiceUnavailable:
				timedOut.Add(1)
			default:
				t.Errorf("slow query: %d %s", code, body)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	// Meanwhile: readiness every 100 ms, and traffic whose rows must land.
	c := &http.Client{Timeout: 2 * time.Second}
	sent, notReady := 0, 0
	before, _ := s.countLogs("target_url NOT LIKE 'http://filler/%'")
	for running := true; running; {
		select {
		case <-done:
			running = false
		case <-time.After(100 * time.Millisecond):
		}
		code, _, err := get(c, s.apiURL+"/readyz")
		if err != nil || code != http.StatusOK {
			notReady++
			t.Errorf("/readyz during the slow queries: %d %v", code, err)
		}
		if _, err := send(c, base, sent); err != nil {
			t.Fatal(err)
		}
		sent++
	}
	took := time.Since(start)
	t.Logf("30 slow queries: %d answered, %d timed out, in %s; %d requests sent meanwhile", answered.Load(), timedOut.Load(), took, sent)
	if took > 2*time.Minute {
		t.Fatalf("slow queries took %s: they are not bounded", took)
	}
	s.waitLogs(500000+before+sent, 30*time.Second)

	for query, field := range map[string]string{
		"min_latency_ms=3000000000": "min_latency_ms", "limit=99999999999999999999": "limit", "status=99999999999": "status",
	} {
		code, body := s.request(http.MethodGet, "/proxy/logs?"+query, "", readToken)
		if got := decode[struct{ Error, Field string }](t, body); code != http.StatusBadRequest || got.Field != field {
			t.Errorf("%s: %d %s, want 400 naming %s", query, code, body, field)
		}
	}
}
