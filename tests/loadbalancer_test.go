package tests

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nemesis-ml/nemesis/internal/dev/servers"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

// TestSettingsDriveEnvoy changes the policy, connection limit and timeout
// with PUT and checks each in Envoy's config and in the traffic it routes.
func TestSettingsDriveEnvoy(t *testing.T) {
	s := newStack(t)
	host := testenv.NewHost(t)
	backends := startBackends(t, host, "a", "b", "c")
	s.publish("demo", "/models/demo", backends)
	envoy := s.startEnvoy()
	cluster := s.namespace + "/demo"
	url := fmt.Sprintf("http://127.0.0.1:%d/models/demo/predict", s.envoyPort)
	s.waitHosts(envoy, cluster, 3)

	t.Run("round_robin", func(t *testing.T) {
		s.mustPut("round_robin", 100, 10)
		dump := s.clusterConfig(envoy, cluster)
		// ROUND_ROBIN is the proto's zero value: config_dump omits lb_policy.
		if strings.Contains(dump, `"lb_policy"`) || !strings.Contains(dump, `"max_connections": 100`) {
			t.Fatalf("cluster is not round robin with 100 connections:\n%s", dump)
		}
		counts := countOf(sequence(t, url, 300))
		for _, b := range backends {
			if counts[b.name] != 100 {
				t.Fatalf("round robin over 300 requests: %v, want 100 each", counts)
			}
		}
	})

	t.Run("random", func(t *testing.T) {
		s.mustPut("random", 100, 10)
		if dump := s.clusterConfig(envoy, cluster); !strings.Contains(dump, `"lb_policy": "RANDOM"`) {
			t.Fatalf("cluster is not RANDOM:\n%s", dump)
		}
		seq := sequence(t, url, 300)
		counts := countOf(seq)
		for _, b := range backends {
			if counts[b.name] == 0 {
				t.Fatalf("random over 300 requests never reached %s: %v", b.name, counts)
			}
		}
		cyclic := true
		for i := 3; i < len(seq); i++ {
			if seq[i] != seq[i-3] {
				cyclic = false
				break
			}
		}
		if cyclic {
			t.Fatal("random answered in a cycle of three")
		}
	})

	t.Run("least_connections", func(t *testing.T) {
		s.mustPut("least_connections", 100, 10)
		if dump := s.clusterConfig(envoy, cluster); !strings.Contains(dump, `"lb_policy": "LEAST_REQUEST"`) {
			t.Fatalf("cluster is not LEAST_REQUEST:\n%s", dump)
		}
		slow := backends[2]
		slow.delay.Store(int64(100 * time.Millisecond))
		defer slow.delay.Store(0)
		counts := concurrently(url, 6, 300)
		fast := min(counts["200 a"], counts["200 b"])
		if counts["200 a"]+counts["200 b"]+counts["200 c"] != 300 {
			t.Fatalf("not every request succeeded: %v", counts)
		}
		if counts["200 c"]*2 > fast {
			t.Fatalf("slow backend got %d requests, fast ones %d and %d: want clearly fewer", counts["200 c"], counts["200 a"], counts["200 b"])
		}
	})

	t.Run("max_connections overflow gets 503", func(t *testing.T) {
		s.mustPut("round_robin", 1, 10)
		if dump := s.clusterConfig(envoy, cluster); !strings.Contains(dump, `"max_connections": 1,`) {
			t.Fatalf("cluster's circuit breaker is not 1:\n%s", dump)
		}
		for _, b := range backends {
			b.delay.Store(int64(300 * time.Millisecond))
		}
		defer func() {
			for _, b := range backends {
				b.delay.Store(0)
			}
		}()
		counts := concurrently(url, 12, 12)
		overflow := 0
		for k, n := range counts {
			if strings.HasPrefix(k, "503 ") {
				overflow += n
			}
		}
		if overflow == 0 || overflow == 12 {
			t.Fatalf("12 concurrent requests with max_connections 1: %v, want some served and the overflow 503", counts)
		}
	})

	t.Run("timeout_seconds gives 504", func(t *testing.T) {
		s.mustPut("round_robin", 100, 1)
		if dump, _ := envoy.Admin(t.Context(), "/config_dump?resource=dynamic_route_configs"); !strings.Contains(dump, `"timeout": "1s"`) {
			t.Fatalf("route timeout is not 1s:\n%s", dump)
		}
		for _, b := range backends {
			b.delay.Store(int64(2 * time.Second))
		}
		defer func() {
			for _, b := range backends {
				b.delay.Store(0)
			}
		}()
		start := time.Now()
		code, body, err := get(&http.Client{Timeout: 10 * time.Second}, url)
		if err != nil || code != http.StatusGatewayTimeout {
			t.Fatalf("slow backend with a 1 s timeout: %d %q %v, want 504", code, body, err)
		}
		if took := time.Since(start); took >= 2*time.Second {
			t.Fatalf("504 took %s: the route timeout did not cut it", took)
		}
	})
}

func TestEndpointSliceChangesReachEnvoy(t *testing.T) {
	s := newStack(t)
	host := testenv.NewHost(t)
	backends := startBackends(t, host, "a", "b", "c")
	s.publish("demo", "/models/demo", backends)
	envoy := s.startEnvoy()
	cluster := s.namespace + "/demo"
	url := fmt.Sprintf("http://127.0.0.1:%d/models/demo", s.envoyPort)
	s.waitHosts(envoy, cluster, 3)

	s.removeSlice("demo", backends[2])
	s.waitHosts(envoy, cluster, 2)
	before := backends[2].served.Load()
	counts := countOf(sequence(t, url, 30))
	if backends[2].served.Load() != before || counts["a"] == 0 || counts["b"] == 0 {
		t.Fatalf("after removing c: %v, c served %d more", counts, backends[2].served.Load()-before)
	}

	d := startBackends(t, host, "d")[0]
	s.addSlice("demo", d)
	s.waitHosts(envoy, cluster, 3)
	if counts := countOf(sequence(t, url, 30)); counts["d"] == 0 {
		t.Fatalf("after adding d: %v", counts)
	}
}

func TestInvalidSettingsAreRefusedAndChangeNothing(t *testing.T) {
	s := newStack(t)
	s.mustPut("random", 10, 5)
	history := func() string {
		_, body := s.request(http.MethodGet, "/loadbalancer/settings/history?environment="+s.env, "", readToken)
		return body
	}
	before := history()
	valid := func(field, value string) string {
		fields := map[string]string{
			"environment": fmt.Sprintf("%q", s.env), "policy": `"round_robin"`, "max_connections": "10", "timeout_seconds": "5",
		}
		fields[field] = value
		var parts []string
		for k, v := range fields {
			if v != "" {
				parts = append(parts, fmt.Sprintf("%q:%s", k, v))
			}
		}
		return "{" + strings.Join(parts, ",") + "}"
	}
	for name, tc := range map[string]struct{ body, field string }{
		"unknown policy":         {valid("policy", `"fastest"`), "policy"},
		"policy not a string":    {valid("policy", `3`), "policy"},
		"missing policy":         {valid("policy", ""), "policy"},
		"zero max_connections":   {valid("max_connections", "0"), "max_connections"},
		"huge max_connections":   {valid("max_connections", "1000001"), "max_connections"},
		"fractional connections": {valid("max_connections", "1.5"), "max_connections"},
		"zero timeout":           {valid("timeout_seconds", "0"), "timeout_seconds"},
		"timeout over an hour":   {valid("timeout_seconds", "3601"), "timeout_seconds"},
		"missing timeout":        {valid("timeout_seconds", ""), "timeout_seconds"},
		"negative retries":       {valid("retry_attempts", "-1"), "retry_attempts"},
		"eleven retries":         {valid("retry_attempts", "11"), "retry_attempts"},
		"zero retry budget":      {valid("retry_budget_percent", "0"), "retry_budget_percent"},
		"retry budget over 100":  {valid("retry_budget_percent", "101"), "retry_budget_percent"},
		"zero stream idle":       {valid("stream_idle_timeout_seconds", "0"), "stream_idle_timeout_seconds"},
		"stream idle over 1 h":   {valid("stream_idle_timeout_seconds", "3601"), "stream_idle_timeout_seconds"},
		"environment with caps":  {valid("environment", `"Prod"`), "environment"},
		"environment too long":   {valid("environment", `"`+strings.Repeat("a", 51)+`"`), "environment"},
		"null environment":       {valid("environment", "null"), "environment"},
		"environment a number":   {valid("environment", "7"), "environment"},
		"null policy":            {valid("policy", "null"), "policy"},
		"null max_connections":   {valid("max_connections", "null"), "max_connections"},
		"connections as string":  {valid("max_connections", `"10"`), "max_connections"},
		"unknown field":          {`{"policy":"random","max_connections":1,"timeout_seconds":1,"weight":3}`, "weight"},
		"two JSON values":        {valid("policy", `"random"`) + `{}`, ""},
		"malformed JSON":         {`{"policy":`, ""},
		"oversized body":         {`{"policy":"` + strings.Repeat("x", 20000) + `"}`, ""},
		"empty body":             {``, ""},
		"trailing brace":         {valid("policy", `"least_connections"`) + `}`, ""},
		"trailing garbage":       {valid("policy", `"least_connections"`) + `]garbage`, ""},
		"duplicate key":          {`{"policy":"random","policy":"least_connections","max_connections":1,"timeout_seconds":1}`, "policy"},
		"case-mismatched keys": {fmt.Sprintf(`{"environment":%q,"POLICY":"random","Policy":"least_connections","max_connections":1,"timeout_seconds":1}`, s.env),
			"POLICY"},
	} {
		t.Run(name, func(t *testing.T) {
			code, body := s.request(http.MethodPut, "/loadbalancer/settings", tc.body, token)
			if code != http.StatusBadRequest {
				t.Fatalf("got %d %s, want 400", code, body)
			}
			got := decode[struct{ Error, Field string }](t, body)
			if got.Field != tc.field || got.Error == "" {
				t.Fatalf("error %+v, want it to name field %q", got, tc.field)
			}
		})
	}
	// A parameter given but empty is refused like any other invalid value,
	// not read as absent; ?timeout= takes the form its pattern declares.
	for query, field := range map[string]string{
		"GET /loadbalancer/settings?environment=":              "environment",
		"GET /loadbalancer/settings/history?environment=":      "environment",
		"GET /loadbalancer/settings/history?limit=":            "limit",
		"PUT /loadbalancer/settings?wait=":                     "wait",
		"PUT /loadbalancer/settings?wait=ack&timeout=":         "timeout",
		"PUT /loadbalancer/settings?wait=ack&timeout=3m":       "timeout",
		"PUT /loadbalancer/settings?wait=ack&timeout=1m30s":    "timeout",
		"PUT /loadbalancer/settings?wait=ack&timeout=0s":       "timeout",
		"PUT /loadbalancer/settings?wait=ack&timeout=120001ms": "timeout",
		"PUT /loadbalancer/settings?timeout=soon":              "timeout",
	} {
		t.Run(query, func(t *testing.T) {
			method, path, _ := strings.Cut(query, " ")
			code, body := s.request(method, path, valid("policy", `"round_robin"`), token)
			if code != http.StatusBadRequest {
				t.Fatalf("got %d %s, want 400", code, body)
			}
			if got := decode[struct{ Error, Field string }](t, body); got.Field != field {
				t.Fatalf("error %+v, want it to name %q", got, field)
			}
		})
	}
	for query, field := range map[string]string{
		"?wait=ack&timeout=%%%": "timeout",
		"?wait=ack;timeout=5s":  "wait",
		"?wait=ack&wait=ack":    "wait",
		"?wait=ack&colour=blue": "colour",
	} {
		t.Run("query "+query, func(t *testing.T) {
			code, body := s.request(http.MethodPut, "/loadbalancer/settings"+query, valid("policy", `"least_connections"`), token)
			if got := decode[struct{ Error, Field string }](t, body); code != http.StatusBadRequest || got.Field != field {
				t.Fatalf("got %d %s, want 400 naming %s", code, body, field)
			}
		})
	}
	for query, field := range map[string]string{
		"/loadbalancer/settings?environment=%%%":         "environment",
		"/loadbalancer/settings/history?limit=1&limit=2": "limit",
		"/loadbalancer/settings?env=prod":                "env",
	} {
		code, body := s.request(http.MethodGet, query, "", readToken)
		if got := decode[struct{ Error, Field string }](t, body); code != http.StatusBadRequest || got.Field != field {
			t.Errorf("GET %s: %d %s, want 400 naming %s", query, code, body, field)
		}
	}
	if got := s.metric("nemesis_settings_requests_refused_total"); got < 20 {
		t.Errorf("nemesis_settings_requests_refused_total = %v after more than 20 refusals", got)
	}
	t.Run("missing token", func(t *testing.T) {
		code, body := s.request(http.MethodPut, "/loadbalancer/settings", valid("policy", `"round_robin"`), "")
		if code != http.StatusUnauthorized {
			t.Fatalf("got %d %s, want 401", code, body)
		}
	})
	if after := history(); after != before {
		t.Fatalf("history changed:\nbefore %s\nafter %s", before, after)
	}
}

func TestGetSettingsShowsDefaultsThenStored(t *testing.T) {
	s := newStack(t)
	code, body := s.request(http.MethodGet, "/loadbalancer/settings?environment="+s.env, "", readToken)
	got := decode[map[string]any](t, body)
	if code != http.StatusOK || got["default"] != true || got["policy"] != "round_robin" ||
		got["max_connections"] != float64(1024) || got["timeout_seconds"] != float64(15) {
		t.Fatalf("defaults: %d %s", code, body)
	}
	s.mustPut("least_connections", 50, 30)
	// Whole numbers are JSON Schema integers however they are written.
	code, body = s.put(fmt.Sprintf(`{"environment":%q,"policy":"random","max_connections":60.0,"timeout_seconds":2e1}`, s.env))
	if code != http.StatusOK {
		t.Fatalf("PUT 60.0 and 2e1: %d %s", code, body)
	}
	_, body = s.request(http.MethodGet, "/loadbalancer/settings?environment="+s.env, "", readToken)
	got = decode[map[string]any](t, body)
	if got["policy"] != "random" || got["max_connections"] != float64(60) || got["timeout_seconds"] != float64(20) || got["default"] != nil {
		t.Fatalf("current: %s", body)
	}
	_, body = s.request(http.MethodGet, "/loadbalancer/settings/history?limit=5&environment="+s.env, "", readToken)
	hist := decode[[]map[string]any](t, body)
	if len(hist) != 2 || hist[0]["policy"] != "random" || hist[1]["policy"] != "least_connections" {
		t.Fatalf("history: %s", body)
	}
	_, body = s.request(http.MethodGet, "/openapi.json", "", "")
	if doc := decode[map[string]any](t, body); doc["openapi"] == nil {
		t.Fatalf("openapi.json: %s", body)
	}
}

func TestStatusListsEnvoysAndAckedVersions(t *testing.T) {
	s := newStack(t)
	s.startEnvoy()
	s.startEnvoy()
	s.mustPut("random", 10, 5)
	_, body := s.request(http.MethodGet, "/loadbalancer/status", "", readToken)
	status := decode[struct {
		Environments map[string][]struct {
			Node         string `json:"node"`
			AckedVersion string `json:"acked_version"`
		}
	}](t, body)
	envoys := status.Environments[s.env]
	if len(envoys) != 2 || envoys[0].AckedVersion == "" || envoys[0].AckedVersion != envoys[1].AckedVersion {
		t.Fatalf("status: %s", body)
	}
}

func TestPostgresDownRefusesChangesAndEnvoyKeepsServing(t *testing.T) {
	s, envoy, url := servingStack(t)

	if err := s.pg.Stop(); err != nil {
		t.Fatal(err)
	}
	code, body := s.put(fmt.Sprintf(`{"environment":%q,"policy":"least_connections","max_connections":10,"timeout_seconds":5}`, s.env))
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "database unavailable") {
		t.Fatalf("PUT with PostgreSQL down: %d %s, want 503 saying the database is unavailable", code, body)
	}
	sequence(t, url, 20)
	if dump := s.clusterConfig(envoy, s.namespace+"/demo"); !strings.Contains(dump, `"lb_policy": "RANDOM"`) {
		t.Fatalf("Envoy lost its last config:\n%s", dump)
	}

	if err := s.pg.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "PUT after PostgreSQL returned", func() error {
		code, body := s.put(fmt.Sprintf(`{"environment":%q,"policy":"least_connections","max_connections":10,"timeout_seconds":5}`, s.env))
		if code != http.StatusOK {
			return fmt.Errorf("%d %s", code, body)
		}
		return nil
	})
	if dump := s.clusterConfig(envoy, s.namespace+"/demo"); !strings.Contains(dump, `"lb_policy": "LEAST_REQUEST"`) {
		t.Fatalf("change after PostgreSQL returned did not apply:\n%s", dump)
	}
}

func TestServeRestartEnvoyKeepsServingAndReconnects(t *testing.T) {
	s, envoy, url := servingStack(t)

	if err := s.serve.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	sequence(t, url, 20)

	s.startServe()
	s.waitConnected(1)
	s.mustPut("least_connections", 10, 5)
	if dump := s.clusterConfig(envoy, s.namespace+"/demo"); !strings.Contains(dump, `"lb_policy": "LEAST_REQUEST"`) {
		t.Fatalf("change after restart did not apply:\n%s", dump)
	}
	sequence(t, url, 20)
}

// servingStack is a stack whose Envoy serves /models/demo from two
// backends with the random policy; it returns the stack, the Envoy and the
// model's URL through it.
func servingStack(t *testing.T) (*stack, *servers.Envoy, string) {
	t.Helper()
	s := newStack(t)
	backends := startBackends(t, testenv.NewHost(t), "a", "b")
	s.publish("demo", "/models/demo", backends)
	envoy := s.startEnvoy()
	s.waitHosts(envoy, s.namespace+"/demo", 2)
	s.mustPut("random", 10, 5)
	return s, envoy, fmt.Sprintf("http://127.0.0.1:%d/models/demo", s.envoyPort)
}
