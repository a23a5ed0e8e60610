package tests

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nemesis-ml/nemesis/internal/dev/servers"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

func TestConcurrentPutsLeaveEveryEnvoyOnTheNewest(t *testing.T) {
	s := newStack(t)
	backends := startBackends(t, testenv.NewHost(t), "a", "b")
	s.publish("demo", "/models/demo", backends)
	envoys := []*servers.Envoy{s.startEnvoy(), s.startEnvoy()}
	for _, e := range envoys {
		s.waitHosts(e, s.namespace+"/demo", 2)
	}

	// Alternating settings, all at once: a PUT whose snapshot is built
	// after a newer one's must not replace it.
	policies := []string{"least_connections", "random"}
	var wg sync.WaitGroup
	errs := make(chan string, 200)
	for i := range 200 {
		wg.Go(func() {
			body := fmt.Sprintf(`{"environment":%q,"policy":%q,"max_connections":%d,"timeout_seconds":%d}`,
				s.env, policies[i%2], 100+i, 1+i%30)
			code, resp := s.request(http.MethodPut, "/loadbalancer/settings", body, token)
			if code != http.StatusOK {
				errs <- fmt.Sprintf("PUT %d: %d %s", i, code, resp)
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	_, body := s.request(http.MethodGet, "/loadbalancer/settings?environment="+s.env, "", readToken)
	newest := decode[struct {
		Version        int64  `json:"version"`
		Policy         string `json:"policy"`
		MaxConnections int    `json:"max_connections"`
	}](t, body)
	testenv.Eventually(t, 30*time.Second, fmt.Sprintf("every envoy on version %d", newest.Version), func() error {
		_, body := s.request(http.MethodGet, "/loadbalancer/status", "", readToken)
		status := decode[struct {
			Environments map[string][]struct {
				Node         string `json:"node"`
				AckedVersion string `json:"acked_version"`
			} `json:"environments"`
		}](t, body)
		if len(status.Environments[s.env]) != len(envoys) {
			return fmt.Errorf("%d envoys connected", len(status.Environments[s.env]))
		}
		for _, e := range status.Environments[s.env] {
			settingsVersion, _, _ := strings.Cut(e.AckedVersion, ".")
			if v, _ := strconv.ParseInt(settingsVersion, 10, 64); v != newest.Version {
				return fmt.Errorf("%s acked %s", e.Node, e.AckedVersion)
			}
		}
		return nil
	})
	// Stays there: nothing older is published after.
	time.Sleep(time.Second)
	lbPolicy := map[string]string{"least_connections": "LEAST_REQUEST", "random": "RANDOM"}[newest.Policy]
	for i, e := range envoys {
		dump := s.clusterConfig(e, s.namespace+"/demo")
		if !strings.Contains(dump, `"lb_policy": "`+lbPolicy+`"`) || !strings.Contains(dump, fmt.Sprintf(`"max_connections": %d`, newest.MaxConnections)) {
			t.Fatalf("envoy %d does not run version %d (%s, %d connections):\n%s", i, newest.Version, lbPolicy, newest.MaxConnections, dump)
		}
	}
}
