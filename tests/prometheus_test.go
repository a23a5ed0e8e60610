package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/internal/dev/servers"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

// proxyLogAlert is the alert that stopping PostgreSQL must fire, and
// proxyLogAlertFor the `for` it gets in this test instead of the rule
// file's 5 minutes (see testRules).
const (
	proxyLogAlert    = "NemesisProxyLogWriteErrors"
	proxyLogAlertFor = 10 * time.Second
)

// TestPrometheusScrapesTheStack runs a real Prometheus, with the rules of
// manifests/monitoring, scraping serve, Envoy and the demo model's sidecar
// while the demo wakes from zero and takes load: every metric of
// docs/metrics.md is on its process's /metrics, every PromQL expression of
// the dashboards and recording rules returns a series, the wake is in the
// cold-start histogram, and PostgreSQL stopped for longer than the
// proxy-log alert's `for` makes it fire.
func TestPrometheusScrapesTheStack(t *testing.T) {
	s := newStack(t)
	envoy := s.startEnvoy()
	s.waitConnected(1)
	s.mustPut("least_connections", 100, 30) // a settings change for the dashboards' annotation
	s.startRuntime(slog.New(slog.DiscardHandler))
	s.startDemo(0, "1s", 500, v1alpha1.CustomAutoscalerSpec{
		MinReplicas: 0, MaxReplicas: 2,
		Rules: []v1alpha1.ScalingRule{{ID: "slow", Action: v1alpha1.ActionIncreaseInstances, WindowSeconds: 5,
			Thresholds: []v1alpha1.Threshold{{MetricType: v1alpha1.MetricAverageResponseTime, Operator: v1alpha1.OperatorGreaterThan, Value: 1000}}}},
	})
	route := s.namespace + "/digits"
	s.waitActivatorOnRoute(envoy, route, true)
	s.waitDecided("digits")
	prom := s.startPrometheus(envoy)
	start := time.Now()
	// The wake's scale counted from a scraped 0, so that increase() sees it.
	if n := prom.waitValue(t, fmt.Sprintf(`nemesis_autoscaler_scales_total{namespace=%q, name="digits", rule="activation"}`, s.namespace)); n != 0 {
		t.Fatalf("%v wakes before the first request", n)
	}

	// The wake from zero, then steady load until the test ends.
	url := fmt.Sprintf("http://127.0.0.1:%d/models/digits/predict", s.envoyPort)
	predict := func() (*http.Request, error) {
		return http.NewRequest(http.MethodPost, url, strings.NewReader(seven))
	}
	for _, r := range burstOf(5, predict) {
		if r.err != nil || r.code != http.StatusOK {
			t.Fatalf("held request: %d %q %v", r.code, r.body, r.err)
		}
	}
	stopLoad := s.load(url, 4)
	defer stopLoad()

	if code, body := s.request(http.MethodGet, "/proxy/logs?limit=1", "", readToken); code != http.StatusOK { // for its counter
		t.Fatalf("GET /proxy/logs: %d %s", code, body)
	}
	// A request no route takes: a failure before any pod, for its counter.
	if code, _, err := get(http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/nowhere", s.envoyPort)); err != nil || code != http.StatusNotFound {
		t.Fatalf("GET /nowhere through Envoy: %d %v", code, err)
	}
	t.Run("documented metrics are exported", func(t *testing.T) { s.checkDocumentedMetrics(t) })

	t.Run("the wake is in the cold-start histograms", func(t *testing.T) {
		sel := fmt.Sprintf(`{environment=%q, route=%q}`, s.env, route)
		count := prom.waitValue(t, "nemesis_activator_cold_start_duration_seconds_count"+sel)
		sum := prom.waitValue(t, "nemesis_activator_cold_start_duration_seconds_sum"+sel)
		// Exactly one wake; it cannot be shorter than the model's start-up.
		if count != 1 || sum < 1 {
			t.Fatalf("cold starts: count %v, sum %vs; want 1 wake of at least the model's 1 s start-up", count, sum)
		}
		for _, stage := range []string{"wake", "ready", "release"} {
			q := fmt.Sprintf(`nemesis_activator_cold_start_stage_duration_seconds_count{environment=%q, route=%q, stage=%q}`, s.env, route, stage)
			if n := prom.waitValue(t, q); n != 1 {
				t.Fatalf("%s: %v, want 1", q, n)
			}
		}
		t.Logf("the wake took %.3fs from the first held request to its release", sum)
	})

	t.Run("every dashboard and recording rule expression returns series", func(t *testing.T) {
		vars := strings.NewReplacer("$namespace", s.namespace, "$autoscaler", "digits", "$environment", s.env,
			"$__rate_interval", "1m")
		for _, e := range expressions(t) {
			q := vars.Replace(e.expr)
			testenv.Eventually(t, 90*time.Second, e.where+" returns a series", func() error {
				res, err := prom.QueryRange(t.Context(), q, start, time.Now(), time.Second)
				if err != nil {
					return err
				}
				if len(res.Result) == 0 {
					return fmt.Errorf("no series for %s", q)
				}
				return nil
			})
		}
		s.checkSettingsAnnotation(t, vars)
	})

	t.Run("PostgreSQL stopped fires the proxy-log alert", func(t *testing.T) {
		if state := prom.alertState(t, proxyLogAlert); state != "" {
			t.Fatalf("%s is %s while PostgreSQL runs", proxyLogAlert, state)
		}
		if err := s.pg.Stop(); err != nil {
			t.Fatal(err)
		}
		stopped := time.Now()
		defer func() {
			if err := s.pg.Start(context.WithoutCancel(t.Context())); err != nil {
				t.Error(err)
			}
		}()
		testenv.Eventually(t, 2*time.Minute, proxyLogAlert+" firing", func() error {
			if state := prom.alertState(t, proxyLogAlert); state != "firing" {
				return fmt.Errorf("%s is %q", proxyLogAlert, state)
			}
			return nil
		})
		if d := time.Since(stopped); d < proxyLogAlertFor {
			t.Fatalf("%s fired %v after PostgreSQL stopped, before its `for` of %v", proxyLogAlert, d, proxyLogAlertFor)
		}
		t.Logf("%s firing %v after PostgreSQL stopped", proxyLogAlert, time.Since(stopped).Round(time.Second))
	})
}

// testProm is the test's Prometheus.
type testProm struct {
	*servers.Prometheus
}

// startPrometheus runs Prometheus scraping serve, the Envoy's admin and the
// sidecars of the stack's namespace every second, with testRules loaded.
func (s *stack) startPrometheus(envoy *servers.Envoy) testProm {
	s.t.Helper()
	dir := testenv.Dir(s.t, "prometheus")
	targets := filepath.Join(dir, "sidecars.json")
	ctx, stop := context.WithCancel(context.Background())
	synced := make(chan error, 1)
	go func() { synced <- servers.SidecarTargets(ctx, testenv.Kube(s.t), targets, time.Second) }()
	s.t.Cleanup(func() {
		stop()
		if err := <-synced; err != nil {
			s.t.Error(err)
		}
	})
	p, err := servers.StartPrometheus(s.t.Context(), servers.PrometheusConfig{
		Dir: dir, Port: testenv.Port(s.t), Interval: time.Second, Rules: []string{testRules(s.t, dir)},
		SidecarTargets: targets,
		Targets: []servers.ScrapeTarget{
			{Job: "nemesis", Address: s.serveListen, BearerToken: readToken},
			{Job: "envoy", Address: strings.TrimPrefix(envoy.AdminURL(), "http://"), Path: "/stats/prometheus"},
		},
	})
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() {
		if s.t.Failed() {
			s.t.Logf("prometheus log:\n%s", p.Process().Log(8<<10))
		}
		_ = p.Stop()
	})
	return testProm{p}
}

// testRules writes the rule file of manifests/monitoring with one change,
// so that the test stays short: the proxy-log alert's `for` is
// proxyLogAlertFor instead of 5 minutes. Everything else, its expression
// included, is the file as shipped.
func testRules(t *testing.T, dir string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "manifests", "monitoring", "prometheus", "rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Name  string           `json:"name"`
			Rules []map[string]any `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			if r["alert"] == proxyLogAlert {
				r["for"] = proxyLogAlertFor.String()
				found = true
			}
		}
	}
	if !found {
		t.Fatalf("no alert %s in the rule file", proxyLogAlert)
	}
	out, err := yaml.Marshal(file)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// waitValue waits until an instant query returns one series and returns
// its value.
func (p testProm) waitValue(t *testing.T, query string) float64 {
	t.Helper()
	var v float64
	testenv.Eventually(t, time.Minute, query, func() error {
		res, err := p.Query(t.Context(), query)
		if err != nil {
			return err
		}
		if len(res.Result) != 1 || len(res.Result[0].Value) != 2 {
			return fmt.Errorf("%d series", len(res.Result))
		}
		_, err = fmt.Sscan(fmt.Sprint(res.Result[0].Value[1]), &v)
		return err
	})
	return v
}

// alertState is the state of an alert in /api/v1/alerts ("pending",
// "firing"), empty when it is neither.
func (p testProm) alertState(t *testing.T, name string) string {
	t.Helper()
	var out struct {
		Data struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
				State  string            `json:"state"`
			} `json:"alerts"`
		} `json:"data"`
	}
	if err := p.Get(t.Context(), "/api/v1/alerts", nil, &out); err != nil {
		t.Fatal(err)
	}
	state := ""
	for _, a := range out.Data.Alerts {
		if a.Labels["alertname"] == name && (state == "" || a.State == "firing") {
			state = a.State
		}
	}
	return state
}

// load sends predictions from n clients until the returned stop is called;
// their failures do not matter here (PostgreSQL is stopped meanwhile).
func (s *stack) load(url string, n int) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			c := &http.Client{Timeout: 10 * time.Second}
			for {
				select {
				case <-done:
					return
				default:
				}
				_, _, _ = post(c, url)
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

// documented is a metric of docs/metrics.md and the process exporting it.
type documented struct{ name, from string }

// documentedMetrics reads the metric tables of docs/metrics.md: rows whose
// first cell is a `nemesis_…` name and second the process.
func documentedMetrics(t *testing.T) []documented {
	t.Helper()
	f, err := os.Open(filepath.Join(testenv.RepoRoot(t), "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	row := regexp.MustCompile("^\\| `(nemesis_[a-z_]+)` \\| (serve|sidecar|sidecar proxy) \\|")
	var out []documented
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := row.FindStringSubmatch(sc.Text()); m != nil {
			out = append(out, documented{name: m[1], from: m[2]})
		}
	}
	if len(out) < 40 {
		t.Fatalf("read %d metrics from docs/metrics.md; its tables changed shape", len(out))
	}
	return out
}

// checkDocumentedMetrics compares docs/metrics.md with serve's and a
// sidecar's /metrics: every documented metric has a series, and every
// nemesis_ metric exported is documented.
func (s *stack) checkDocumentedMetrics(t *testing.T) {
	var pods corev1.PodList
	if err := s.kube.List(t.Context(), &pods, client.InNamespace(s.namespace)); err != nil {
		t.Fatal(err)
	}
	sidecar := ""
	for _, p := range pods.Items {
		if p.Status.PodIP != "" {
			sidecar = fmt.Sprintf("http://%s:9091/metrics", p.Status.PodIP)
		}
	}
	if sidecar == "" {
		t.Fatal("no pod with an address")
	}
	exported := map[string]map[string]bool{"serve": families(t, s.apiURL+"/metrics"), "sidecar": families(t, sidecar)}
	documentedSet := map[string]bool{}
	for _, d := range documentedMetrics(t) {
		documentedSet[d.name] = true
		if d.from == "sidecar proxy" {
			// The demo's sidecars meter beside the model: they proxy
			// nothing and must not claim to.
			if exported["sidecar"][d.name] {
				t.Errorf("a sidecar in metering mode exports %s", d.name)
			}
			continue
		}
		// A metric whose series come later (a NACK, a rejected request)
		// must still be there: the stack's flow makes every one appear.
		testenv.Eventually(t, 30*time.Second, d.name+" on "+d.from+"'s /metrics", func() error {
			if !exported[d.from][d.name] {
				url := s.apiURL + "/metrics"
				if d.from == "sidecar" {
					url = sidecar
				}
				exported[d.from] = families(t, url)
				if !exported[d.from][d.name] {
					return fmt.Errorf("%s is not on %s", d.name, url)
				}
			}
			return nil
		})
	}
	for from, names := range exported {
		for name := range names {
			if strings.HasPrefix(name, "nemesis_") && !documentedSet[name] {
				t.Errorf("%s exports %s, which docs/metrics.md does not document", from, name)
			}
		}
	}
}

// families returns the names of the metric families with at least one
// series on a /metrics page.
func families(t *testing.T, url string) map[string]bool {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	// serve's /metrics needs the read scope; the sidecar's ignores it.
	req.Header.Set("Authorization", "Bearer "+readToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) `).FindAllStringSubmatch(string(body), -1) {
		out[m[1]] = true
	}
	return out
}

// expression is a PromQL expression and where it comes from.
type expression struct{ where, expr string }

// expressions are the PromQL of the dashboards' panels and annotations and
// of the recording rules.
func expressions(t *testing.T) []expression {
	t.Helper()
	root := filepath.Join(testenv.RepoRoot(t), "manifests", "monitoring")
	var out []expression
	boards, _ := filepath.Glob(filepath.Join(root, "dashboards", "*.json"))
	for _, path := range boards {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var board struct {
			Panels []struct {
				Title   string `json:"title"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			} `json:"panels"`
			Annotations struct {
				List []struct {
					Name string `json:"name"`
					Expr string `json:"expr"`
				} `json:"list"`
			} `json:"annotations"`
		}
		if err := json.Unmarshal(raw, &board); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		name := filepath.Base(path)
		for _, p := range board.Panels {
			for _, target := range p.Targets {
				out = append(out, expression{name + " panel " + p.Title, target.Expr})
			}
		}
		for _, a := range board.Annotations.List {
			if a.Expr != "" {
				out = append(out, expression{name + " annotation " + a.Name, a.Expr})
			}
		}
	}
	raw, err := os.ReadFile(filepath.Join(root, "prometheus", "rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Rules []struct {
				Record string `json:"record"`
				Expr   string `json:"expr"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				out = append(out, expression{"recording rule " + r.Record, r.Expr})
			}
		}
	}
	if len(out) < 40 {
		t.Fatalf("found %d expressions; the dashboards or rules changed shape", len(out))
	}
	return out
}

// checkSettingsAnnotation runs the dashboards' PostgreSQL annotation query,
// Grafana's macros filled in, and wants the test's settings change in it.
func (s *stack) checkSettingsAnnotation(t *testing.T, vars *strings.Replacer) {
	raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "manifests", "monitoring", "dashboards", "overview.json"))
	if err != nil {
		t.Fatal(err)
	}
	var board struct {
		Annotations struct {
			List []struct {
				RawQuery string `json:"rawQuery"`
			} `json:"list"`
		} `json:"annotations"`
	}
	if err := json.Unmarshal(raw, &board); err != nil {
		t.Fatal(err)
	}
	for _, a := range board.Annotations.List {
		if a.RawQuery == "" {
			continue
		}
		sql := vars.Replace(strings.ReplaceAll(a.RawQuery, "$__timeFilter(updated_at)", "updated_at > now() - interval '1 hour'"))
		var n int
		testenv.QueryRow(t, s.dbURL, "SELECT count(*) FROM ("+sql+") q", &n)
		if n == 0 {
			t.Fatalf("the settings annotation found no change: %s", sql)
		}
	}
}
