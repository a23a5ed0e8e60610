package tests

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/nemesis-ml/nemesis/console"
	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/controller/decisions"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

// browser is a headless Chromium tab logged in to the console, which
// keeps every console error and exception the pages write.
type browser struct {
	t      *testing.T
	ctx    context.Context
	base   string
	shots  string
	mu     sync.Mutex
	errors []string
}

func newBrowser(t *testing.T, base string) *browser {
	t.Helper()
	path, err := lookChromium()
	if err != nil {
		t.Fatal(err)
	}
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.UserDataDir(testenv.Dir(t, "chromium")))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	b := &browser{t: t, ctx: ctx, base: base}
	if err := chromedp.Do(ctx); err != nil { // starts the browser, bound to ctx
		t.Fatalf("starting chromium: %v", err)
	}
	go func() {
		for m, err := range chromedp.Console(ctx) {
			if err != nil {
				return
			}
			if m.IsException() || m.Type == "error" {
				b.mu.Lock()
				b.errors = append(b.errors, m.String())
				b.mu.Unlock()
			}
		}
	}()
	return b
}

func lookChromium() (string, error) {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no chromium: run `make tools`")
}

// visit loads path, waits for sel and checks that the page wrote no error
// to the console; a failing check leaves a screenshot.
func (b *browser) visit(path, sel string) { b.visitAllowing(path, sel, "") }

// visitAllowing is visit for a page answered with an error status on
// purpose: the browser logs that status, which allowed names.
func (b *browser) visitAllowing(path, sel, allowed string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	b.mu.Lock()
	b.errors = nil
	b.mu.Unlock()
	if err := chromedp.Do(ctx, chromedp.Navigate(b.base+path), chromedp.WaitVisible(sel)); err != nil {
		b.fail("loading %s: %v", path, err)
	}
	// The deferred scripts have run once the load event fired; errors they
	// wrote arrive with a little lag.
	time.Sleep(300 * time.Millisecond)
	b.mu.Lock()
	var errs []string
	for _, e := range b.errors {
		if allowed == "" || !strings.Contains(e, allowed) {
			errs = append(errs, e)
		}
	}
	b.mu.Unlock()
	if len(errs) > 0 {
		b.fail("%s wrote to the console:\n%s", path, strings.Join(errs, "\n"))
	}
}

// fail saves a screenshot of the page, then fails the test.
func (b *browser) fail(format string, args ...any) {
	b.t.Helper()
	b.t.Fatalf(format+"\n(screenshot: %s)", append(args, b.screenshot("failure"))...)
}

func (b *browser) screenshot(name string) string {
	if b.shots == "" {
		dir, err := os.MkdirTemp("", "nemesis-console-screenshots-")
		if err != nil {
			return err.Error()
		}
		b.shots = dir
	}
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		return "none: " + err.Error()
	}
	path := filepath.Join(b.shots, fmt.Sprintf("%s-%d.png", name, time.Now().UnixNano()))
	if err := os.WriteFile(path, png, 0o644); err != nil {
		return "none: " + err.Error()
	}
	return path
}

// waitFor waits until the page's expression is true; unlike a selector,
// it can tell the page a form led to from the page that sent it.
func (b *browser) waitFor(what, expr string) {
	b.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr)) // fails while the page navigates
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			b.fail("waiting for %s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(sel))
	if err != nil {
		b.fail("reading %s: %v", sel, err)
	}
	return s
}

func (b *browser) eval(expr string) []string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	out, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](expr))
	if err != nil {
		b.fail("evaluating %s: %v", expr, err)
	}
	return out
}

// consoleTarget is one seeded Deployment and its CustomAutoscaler.
type consoleTarget struct {
	name               string
	replicas, min, max int32
	missingTarget      bool
	wantState          string
}

func (s *stack) seedAutoscaler(c consoleTarget) {
	s.t.Helper()
	ctx := s.t.Context()
	labels := map[string]string{"app": c.name}
	if !c.missingTarget {
		d := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: c.name, Namespace: s.namespace},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptr.To(c.replicas), Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "model", Image: "model:1"}}},
				},
			},
		}
		if err := s.kube.Create(ctx, d); err != nil {
			s.t.Fatal(err)
		}
	}
	ca := &v1alpha1.CustomAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: c.name, Namespace: s.namespace},
		Spec: v1alpha1.CustomAutoscalerSpec{
			ScaleTargetRef: v1alpha1.ScaleTargetReference{APIVersion: "apps/v1", Kind: "Deployment", Name: c.name},
			MinReplicas:    c.min, MaxReplicas: c.max,
			Rules: []v1alpha1.ScalingRule{{
				ID: "cpu-high", Action: v1alpha1.ActionIncreaseInstances, WindowSeconds: 30,
				Thresholds: []v1alpha1.Threshold{{MetricType: v1alpha1.MetricCPUUsage, Operator: v1alpha1.OperatorGreaterThan, Value: 700}},
			}},
		},
	}
	if err := s.kube.Create(ctx, ca); err != nil {
		s.t.Fatal(err)
	}
}

// TestConsole drives every page of the console in Chromium against serve
// with seeded autoscalers, decisions, proxy logs and settings.
func TestConsole(t *testing.T) {
	s := newStack(t)
	s.startEnvoy()
	s.waitConnected(1)
	s.mustPut("round_robin", 100, 10)
	s.mustPut("random", 50, 5)

	targets := []consoleTarget{
		{name: "asleep", replicas: 0, min: 0, max: 3, wantState: "at zero"},
		{name: "busy", replicas: 2, min: 1, max: 4, wantState: "steady"},
		{name: "full", replicas: 2, min: 1, max: 2, wantState: "at max"},
		{name: "orphan", min: 1, max: 2, missingTarget: true, wantState: "error"},
	}
	for _, c := range targets {
		s.seedAutoscaler(c)
	}
	// Five scales of "busy" within the last day (the first a wake from
	// zero with its stages), one hold and one dry-run decision the chart
	// must leave out, and one older than a day.
	now := time.Now().UTC()
	seeded := []int{1, 3, 2, 4, 2}
	for i, to := range seeded {
		at := now.Add(time.Duration(i-6) * time.Hour)
		inputs := fmt.Sprintf(`[{"rule":"cpu-high","metric":"CPU_USAGE","operator":"GREATER_THAN","value":%d,"threshold":700,"window_seconds":30}]`, 600+50*i)
		var wake *decisions.Wake
		if i == 0 {
			ms := func(n int) time.Time { return at.Add(time.Duration(n) * time.Millisecond) }
			wake = &decisions.Wake{RequestHeld: ms(-10), Decided: at, ScaleWritten: ms(10), Pod: "busy-abc", PodCreated: ms(40),
				PodReady: ms(840), EndpointAcked: ms(970), Released: ms(990), HeldRequests: 50}
		}
		testenv.Exec(t, s.dbURL, `INSERT INTO scaling_decisions (namespace, name, time, from_replicas, to_replicas, action, rule, reason, inputs, wake)
			VALUES ($1, 'busy', $2, $3, $4, 'INCREASE_INSTANCES', 'cpu-high', 'seeded', $5, $6)`,
			s.namespace, at, max(to-1, 0), to, inputs, wake)
	}
	testenv.Exec(t, s.dbURL, `INSERT INTO scaling_decisions (namespace, name, time, from_replicas, to_replicas, action, rule, reason, limited_by, dry_run) VALUES
		($1, 'busy', $2, 2, 2, 'HOLD', 'cpu-high', 'seeded hold', 'stabilization_window', false),
		($1, 'busy', $2, 2, 3, 'INCREASE_INSTANCES', 'cpu-high', 'seeded dry run', 'dry_run', true),
		($1, 'busy', $3, 1, 2, 'INCREASE_INSTANCES', 'cpu-high', 'seeded, too old', '', false)`,
		s.namespace, now.Add(-30*time.Minute), now.Add(-25*time.Hour))
	// "asleep" went to zero 30 hours ago: at zero all of the last day.
	testenv.Exec(t, s.dbURL, `INSERT INTO scaling_decisions (namespace, name, time, from_replicas, to_replicas, action, rule, reason)
		VALUES ($1, 'asleep', $2, 1, 0, 'DECREASE_INSTANCES', 'idle', 'seeded scale to zero')`, s.namespace, now.Add(-30*time.Hour))
	// 2,500 requests of "busy" in the last minutes, answered by its pod:
	// every 10th a POST, every 7th a 503; and 100 of another route.
	route := s.namespace + "/busy"
	testenv.Exec(t, s.dbURL, `INSERT INTO proxy_logs (timestamp, client_ip, target_url, http_method, response_status, latency_ms, environment, route, request_id, upstream_host)
		SELECT $1::timestamp - (i || ' milliseconds')::interval, '10.0.0.1', 'http://models/busy/predict',
			CASE WHEN i % 10 = 0 THEN 'POST' ELSE 'GET' END, CASE WHEN i % 7 = 0 THEN 503 ELSE 200 END, i % 100, $2, $3, 'req-' || i, '10.1.0.1:8080'
		FROM generate_series(1, 2500) AS i`, now, s.env, route)
	// Requests to "asleep": 30 the activator held and answered 503 three
	// hours ago (no upstream, no flag), 10 Envoy's own 503s (UH) beside
	// them, and 5 activator 503s in the period before.
	testenv.Exec(t, s.dbURL, `INSERT INTO proxy_logs (timestamp, client_ip, target_url, http_method, response_status, latency_ms, environment, route, response_flags)
		SELECT $1::timestamp - (i || ' seconds')::interval, '10.0.0.4', 'http://models/asleep', 'GET', 503, 2000, $2, $3,
			CASE WHEN i <= 30 OR i > 40 THEN '' ELSE 'UH' END
		FROM generate_series(1, 40) AS i`, now.Add(-3*time.Hour), s.env, s.namespace+"/asleep")
	testenv.Exec(t, s.dbURL, `INSERT INTO proxy_logs (timestamp, client_ip, target_url, http_method, response_status, latency_ms, environment, route)
		SELECT $1::timestamp - (i || ' seconds')::interval, '10.0.0.4', 'http://models/asleep', 'GET', 503, 2000, $2, $3
		FROM generate_series(1, 5) AS i`, now.Add(-27*time.Hour), s.env, s.namespace+"/asleep")
	testenv.Exec(t, s.dbURL, `INSERT INTO proxy_logs (timestamp, client_ip, target_url, http_method, response_status, latency_ms, environment, route)
		SELECT $1::timestamp - (i || ' milliseconds')::interval, '10.0.0.2', 'http://models/other', 'GET', 200, 5, $2, 'other/route'
		FROM generate_series(1, 100) AS i`, now, s.env)
	// 1,200 older requests of "full", two hours ago, for the report: every
	// 5th a 500.
	testenv.Exec(t, s.dbURL, `INSERT INTO proxy_logs (timestamp, client_ip, target_url, http_method, response_status, latency_ms, environment, route)
		SELECT $1::timestamp - interval '2 hours' - (i * 100 || ' milliseconds')::interval, '10.0.0.3', 'http://models/full', 'GET',
			CASE WHEN i % 5 = 0 THEN 500 ELSE 200 END, 20, $2, $3
		FROM generate_series(1, 1200) AS i`, now, s.env, s.namespace+"/full")
	// The controller's first evaluations set each autoscaler's status.
	testenv.Eventually(t, 30*time.Second, "every autoscaler evaluated", func() error {
		list := &v1alpha1.CustomAutoscalerList{}
		if err := s.kube.List(t.Context(), list); err != nil {
			return err
		}
		for _, ca := range list.Items {
			if ca.Namespace == s.namespace && ca.Status.ObservedGeneration == 0 {
				return fmt.Errorf("%s not evaluated", ca.Name)
			}
		}
		return nil
	})

	b := newBrowser(t, s.apiURL)

	t.Run("login", func(t *testing.T) {
		b.t = t
		b.visit("/ui/", `input[name="token"]`)
		ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
		defer cancel()
		if err := chromedp.Do(ctx, chromedp.SendKeys(`input[name="token"]`, token), chromedp.Submit(`form.login`), chromedp.WaitVisible(`#fleet`)); err != nil {
			b.fail("logging in: %v", err)
		}
	})

	t.Run("fleet", func(t *testing.T) {
		b.t = t
		b.visit("/ui/", "#fleet")
		for _, c := range targets {
			sel := fmt.Sprintf(`tr[data-autoscaler="%s/%s"] .state`, s.namespace, c.name)
			testenv.Eventually(t, 20*time.Second, c.name+" shows "+c.wantState, func() error {
				b.visit("/ui/", "#fleet")
				if got := b.text(sel); got != c.wantState {
					return fmt.Errorf("state %q", got)
				}
				return nil
			})
		}
		// From the per-minute rollups the trigger keeps: 2,500 requests,
		// every 7th a 503, latencies i % 100 ms (the 95th percentile in the
		// 50–100 ms bucket).
		_, body := s.request(http.MethodGet, "/autoscalers", "", readToken)
		var fleet []struct {
			Namespace, Name string
			Traffic         struct {
				Requests          int64    `json:"requests"`
				RequestsPerSecond float64  `json:"requests_per_second"`
				WindowSeconds     int      `json:"window_seconds"`
				P95               *float64 `json:"p95_latency_ms"`
				ErrorRate         *float64 `json:"error_rate"`
			}
		}
		if err := json.Unmarshal([]byte(body), &fleet); err != nil {
			t.Fatalf("GET /autoscalers: %v: %s", err, body)
		}
		for _, a := range fleet {
			if a.Namespace != s.namespace || a.Name != "busy" {
				continue
			}
			tr := a.Traffic
			// window_seconds is whole seconds; the rate divides by the exact window.
			w := float64(tr.WindowSeconds)
			if tr.Requests != 2500 || tr.ErrorRate == nil || *tr.ErrorRate != 357.0/2500 || tr.P95 == nil || *tr.P95 != 100 ||
				tr.RequestsPerSecond > 2500/w || tr.RequestsPerSecond < 2500/(w+1) {
				t.Errorf("busy's traffic %+v (error rate %v, p95 %v), want 2500 requests, 357 errors, p95 bucket ≤ 100 ms",
					tr, ptrValue(tr.ErrorRate), ptrValue(tr.P95))
			}
			if got := b.text(fmt.Sprintf(`tr[data-autoscaler="%s/busy"] td:nth-child(8)`, s.namespace)); got != "≤ 100 ms" {
				t.Errorf("busy's p95 shows %q", got)
			}
		}
		if dir := os.Getenv("NEMESIS_CONSOLE_SCREENSHOTS"); dir != "" {
			saveScreenshot(t, b, filepath.Join(dir, "console-fleet.png"))
		}
	})

	t.Run("autoscaler", func(t *testing.T) {
		b.t = t
		// Two events as the controller records them: one about busy, one
		// about full, which busy's page must not list.
		for i, name := range []string{"busy", "full"} {
			ev := &eventsv1.Event{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s.e2e%d", name, i), Namespace: s.namespace},
				EventTime:  metav1.NewMicroTime(time.Now()), Type: corev1.EventTypeNormal, Reason: "Scaled", Action: "Scale",
				Note:                fmt.Sprintf("INCREASE_INSTANCES 2 → 4: %s is busy", name),
				ReportingController: "nemesis-autoscaler", ReportingInstance: "e2e",
				Regarding: corev1.ObjectReference{APIVersion: v1alpha1.GroupVersion.String(), Kind: "CustomAutoscaler", Namespace: s.namespace, Name: name},
			}
			if err := s.kube.Create(t.Context(), ev); err != nil {
				t.Fatal(err)
			}
		}
		b.visit("/ui/autoscalers/"+s.namespace+"/busy", `figure.chart[data-chart="replicas"][data-points]`)
		events := b.eval(`[...document.querySelectorAll("#events tbody tr")].map(tr => tr.textContent)`)
		if joined := strings.Join(events, "\n"); !strings.Contains(joined, "busy is busy") || strings.Contains(joined, "full is busy") {
			t.Errorf("events table %q, want busy's Scaled event and not full's", events)
		}
		points := b.eval(`[document.querySelector('figure.chart[data-chart="replicas"]').dataset.points,
			String(document.querySelectorAll('figure.chart[data-chart="replicas"] canvas').length)]`)
		if points[0] != strconv.Itoa(len(seeded)) || points[1] != "1" {
			t.Errorf("replica chart drew %s points on %s canvases, want %d on 1", points[0], points[1], len(seeded))
		}
		metric := b.eval(`[...document.querySelectorAll('figure.chart[data-chart="metric"]')].map(f => f.dataset.label + "=" + f.dataset.points)`)
		if fmt.Sprint(metric) != "[cpu-high: CPU_USAGE=5]" {
			t.Errorf("metric charts drew %v, want cpu-high's CPU_USAGE at the 5 seeded decisions with inputs", metric)
		}
		rows := b.eval(`[...document.querySelectorAll("#replicas-table tbody tr td:nth-child(2)")].map(td => td.textContent)`)
		if fmt.Sprint(rows) != fmt.Sprint([]string{"1", "3", "2", "4", "2"}) {
			t.Errorf("the chart's table twin has %v, want 1 3 2 4 2", rows)
		}
		if n := len(b.eval(`[...document.querySelectorAll("#decisions tbody tr")].map(tr => tr.textContent)`)); n != 8 {
			t.Errorf("decision log has %d rows, want the 8 seeded", n)
		}
		// The seeded wake's bar and its table twin: six stages.
		bar := b.eval(`[...document.querySelectorAll("figure.wake .wakebar .stage")].map(s => s.className + " " + s.style.width)`)
		if fmt.Sprint(bar) != fmt.Sprint([]string{"stage decided 1%", "stage scaled 1%", "stage created 3%", "stage ready 80%", "stage acked 13%", "stage released 2%"}) {
			t.Errorf("the cold start's bar has %v, want six stages 1 1 3 80 13 2 %% wide", bar)
		}
		took := b.eval(`[...document.querySelectorAll("figure.wake .wake-stages tbody tr td:nth-child(2)")].map(td => td.textContent)`)
		if fmt.Sprint(took) != fmt.Sprint([]string{"10", "10", "30", "800", "130", "20"}) {
			t.Errorf("the cold start's table has %v ms, want 10 10 30 800 130 20", took)
		}
		if dir := os.Getenv("NEMESIS_CONSOLE_SCREENSHOTS"); dir != "" {
			saveScreenshot(t, b, filepath.Join(dir, "console-autoscaler.png"))
		}
	})

	t.Run("requests", func(t *testing.T) {
		b.t = t
		b.visit("/ui/requests", "#requests")
		ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
		defer cancel()
		if err := chromedp.Do(ctx,
			chromedp.SendKeys(`input[name="route"]`, route), chromedp.SendKeys(`input[name="method"]`, "POST"),
			chromedp.SendKeys(`input[name="status"]`, "5xx"), chromedp.SendKeys(`input[name="limit"]`, "1000"),
			chromedp.Submit(`form.filters`)); err != nil {
			b.fail("filtering: %v", err)
		}
		b.waitFor("the filtered page", "location.search.includes('method=POST') && document.readyState === 'complete' && document.querySelector('#export-csv') !== null")
		ids := b.eval(`[...document.querySelectorAll("#requests tbody tr")].map(tr => tr.cells[10].textContent)`)
		var want []string
		for i := 1; i <= 2500; i++ { // newest first: smallest i first
			if i%10 == 0 && i%7 == 0 {
				want = append(want, "req-"+strconv.Itoa(i))
			}
		}
		if fmt.Sprint(ids) != fmt.Sprint(want) {
			t.Errorf("filtered rows %v, want exactly %v", ids, want)
		}
		// The 35 rows' latencies are i % 100 ms for the multiples i of 70.
		hist := b.eval(`[...document.querySelectorAll("#latency-table tbody tr")].map(tr => tr.cells[0].textContent + "=" + tr.cells[1].textContent)`)
		if fmt.Sprint(hist) != "[0–10=3 10–25=7 25–50=7 50–100=18 100–250=0 250–500=0 500–1000=0 1000–2500=0 2500+=0]" {
			t.Errorf("latency histogram of the filtered rows %v", hist)
		}
		drawn := b.eval(`[...document.querySelectorAll("figure.chart")].map(f => f.dataset.chart + "=" + f.dataset.points)`)
		if len(drawn) != 2 || drawn[0] != "latency=9" || !strings.HasPrefix(drawn[1], "rate=") || drawn[1] == "rate=0" {
			t.Errorf("charts drew %v, want 9 latency buckets and some seconds", drawn)
		}

		b.visitAllowing("/ui/requests?status=abc", "#filter-error", "status of 400 (Bad Request)")
		if got := b.text("#filter-error"); !strings.HasPrefix(got, "status:") {
			t.Errorf("a bad filter shows %q, want the parameter named", got)
		}
	})

	t.Run("export", func(t *testing.T) {
		for format, header := range map[string]int{"csv": 1, "ndjson": 0} {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, s.apiURL+"/proxy/logs/export?format="+format+"&route="+route, nil)
			req.Header.Set("Authorization", "Bearer "+readToken)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			lines, ids := 0, map[string]bool{}
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				lines++
				if format == "ndjson" {
					var row struct {
						RequestID string `json:"request_id"`
					}
					if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
						t.Fatalf("ndjson line %d: %v", lines, err)
					}
					ids[row.RequestID] = true
				}
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if lines != 2500+header || resp.Trailer.Get("X-Export-Complete") != "true" {
				t.Errorf("%s export: %d lines, complete %q; want %d lines, true", format, lines, resp.Trailer.Get("X-Export-Complete"), 2500+header)
			}
			if format == "ndjson" && len(ids) != 2500 {
				t.Errorf("ndjson export has %d distinct requests, want 2500", len(ids))
			}
		}
	})

	t.Run("report", func(t *testing.T) {
		b.t = t
		b.visit("/ui/reports?period=day", "#report")
		// The report reads whole minutes of the rollups: compare with SQL
		// over the same minutes of proxy_logs.
		cells := func(route string) []string {
			return b.eval(fmt.Sprintf(`["requests", "errors", "ups", "downs"].map(c => document.querySelector('tr[data-route=%q] .' + c).firstChild.textContent.trim())`, route))
		}
		var requests, errors int
		testenv.QueryRow(t, s.dbURL, fmt.Sprintf(`SELECT count(*), count(*) FILTER (WHERE response_status >= 500) FROM proxy_logs
			WHERE route = '%s/full' AND timestamp >= date_trunc('minute', (now() AT TIME ZONE 'UTC') - interval '1 day')
			AND timestamp < date_trunc('minute', now() AT TIME ZONE 'UTC')`, s.namespace), &requests, &errors)
		if got, want := cells(s.namespace+"/full"), []string{"1200", "240", "0", "0"}; fmt.Sprint(got) != fmt.Sprint(want) || requests != 1200 || errors != 240 {
			t.Errorf("report row of full %v, SQL over proxy_logs %d requests %d errors; want %v", got, requests, errors, want)
		}
		// busy's five seeded scale-ups of the last day (its requests of the
		// last seconds may or may not be in a whole minute yet).
		if got := cells(route); got[2] != "5" || got[3] != "0" {
			t.Errorf("report row of busy %v, want 5 scale-ups and none down", got)
		}
		// Replica-hours, time at zero, rejected held requests and settings
		// changes: the page and the JSON against SQL over the seeded rows
		// and against the hand-computed values.
		asleep := s.namespace + "/asleep"
		if got := b.eval(fmt.Sprintf(`[%q, %q].flatMap(r => ["replica-hours", "at-zero"].map(c => document.querySelector('tr[data-route="' + r + '"] .' + c).dataset.value)
				.map(v => v === '' ? 'none' : String(Math.round(Number(v) * 1e6) / 1e6))
			.concat([document.querySelector('tr[data-route="' + r + '"] .rejected').firstChild.textContent.trim()]))`, route, asleep)); fmt.Sprint(got) != "[50 0 0 0 86400 30]" {
			t.Errorf("report page: busy and asleep replica-hours, seconds at zero, rejected %v, want [50 0 0 0 86400 30]", got)
		}
		if got := b.text(fmt.Sprintf(`tr[data-environment=%q] .settings`, s.env)); !strings.HasPrefix(got, "2 ") {
			t.Errorf("report page: %s settings changes %q, want 2 (the two seeded versions)", s.env, got)
		}
		s.checkReportFigures(t, now)
		// The hourly rollups the report reads for whole hours equal the
		// minutes' sums and proxy_logs itself, after inserts that added to
		// the same hours.
		var wrong int
		testenv.QueryRow(t, s.dbURL, `SELECT count(*) FROM proxy_log_hours h
			FULL JOIN (SELECT date_trunc('hour', minute) AS hour, environment, route, sum(requests) AS requests, sum(errors) AS errors,
					ARRAY[sum(latency_buckets[1]), sum(latency_buckets[2]), sum(latency_buckets[3]), sum(latency_buckets[4]), sum(latency_buckets[5]),
						sum(latency_buckets[6]), sum(latency_buckets[7]), sum(latency_buckets[8]), sum(latency_buckets[9])]::bigint[] AS latency_buckets
				FROM proxy_log_minutes GROUP BY 1, 2, 3) AS m USING (hour, environment, route)
			FULL JOIN (SELECT date_trunc('hour', timestamp) AS hour, environment, route, count(*) AS requests FROM proxy_logs GROUP BY 1, 2, 3) AS p
				USING (hour, environment, route)
			WHERE h.requests IS DISTINCT FROM m.requests OR h.errors IS DISTINCT FROM m.errors
				OR h.latency_buckets IS DISTINCT FROM m.latency_buckets OR h.requests IS DISTINCT FROM p.requests`, &wrong)
		if wrong != 0 {
			t.Errorf("%d hours of proxy_log_hours differ from their minutes or from proxy_logs", wrong)
		}
		if dir := os.Getenv("NEMESIS_CONSOLE_SCREENSHOTS"); dir != "" {
			saveScreenshot(t, b, filepath.Join(dir, "console-report.png"))
		}
		b.visitAllowing("/ui/reports?period=month", "#report-error", "status of 400 (Bad Request)")
		if got := b.text("#report-error"); !strings.HasPrefix(got, "period:") {
			t.Errorf("a bad period shows %q", got)
		}
	})

	t.Run("loadbalancer", func(t *testing.T) {
		b.t = t
		b.visit("/ui/loadbalancer", fmt.Sprintf(`section[data-environment=%q]`, s.env))
		var first, latest int64
		// QueryRow takes no arguments; the environment's name is e2e-<port>.
		testenv.QueryRow(t, s.dbURL, fmt.Sprintf(`SELECT min(id), max(id) FROM loadbalancer_settings WHERE environment = '%s'`, s.env), &first, &latest)
		ctx, cancel := context.WithTimeout(b.ctx, 40*time.Second)
		defer cancel()
		button := fmt.Sprintf(`section[data-environment=%q] tr[data-version="%d"] button`, s.env, first)
		if err := chromedp.Do(ctx, chromedp.Click(button), chromedp.WaitVisible(`#flash`)); err != nil {
			b.fail("reverting: %v", err)
		}
		var version int64
		var policy string
		var maxConn int
		testenv.QueryRow(t, s.dbURL, fmt.Sprintf(`SELECT id, policy::text, max_connections FROM loadbalancer_settings WHERE environment = '%s' ORDER BY id DESC LIMIT 1`, s.env),
			&version, &policy, &maxConn)
		if version <= latest || policy != "round_robin" || maxConn != 100 {
			t.Fatalf("after the revert the latest version is %d (%s, %d), want a new one with version %d's round_robin, 100", version, policy, maxConn, first)
		}
		if flash := b.text("#flash"); !strings.Contains(flash, fmt.Sprintf("as version %d; 1 Envoys acknowledged", version)) {
			t.Errorf("flash %q", flash)
		}
		// The new version says what it changed from the one before (the
		// test's second PUT: random, 50, 5 s).
		row := fmt.Sprintf(`section[data-environment=%q] tr[data-version="%d"] td.changes`, s.env, version)
		if got, want := b.text(row), "policy: random → round_robin; max connections: 50 → 100; timeout: 5 → 10"; got != want {
			t.Errorf("the reverted version's changes read %q, want %q", got, want)
		}
		acked := b.eval(fmt.Sprintf(`[...document.querySelectorAll('section[data-environment=%q] .envoys td.acked')].map(td => td.textContent)`, s.env))
		// A snapshot version is the settings version, a dot and a sequence.
		if len(acked) != 1 || !strings.HasPrefix(acked[0], strconv.FormatInt(version, 10)+".") {
			t.Errorf("envoys show ACKed versions %v, want [%d]", acked, version)
		}
	})
}

// checkReportFigures asks GET /reports for the day before now and the day
// before that and holds its decision-record, activator and settings figures
// to SQL over the seeded rows and to the values worked out by hand.
func (s *stack) checkReportFigures(t *testing.T, now time.Time) {
	since, until := now.Add(-24*time.Hour), now
	previous := since.Add(-24 * time.Hour)
	code, body := s.request(http.MethodGet, "/reports?since="+since.Format(time.RFC3339Nano)+"&until="+until.Format(time.RFC3339Nano), "", token)
	if code != http.StatusOK {
		t.Fatalf("GET /reports: %d %s", code, body)
	}
	var rep console.Report
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatal(err)
	}
	row := func(name string) console.ReportRow {
		for _, r := range rep.Rows {
			if r.Route == s.namespace+"/"+name {
				return r
			}
		}
		t.Fatalf("report has no row of %s: %s", name, body)
		return console.ReportRow{}
	}
	lit := func(at time.Time) string { return "'" + at.Format(time.RFC3339Nano) + "'::timestamptz" }
	// proxy_logs and loadbalancer_settings hold UTC in timestamp columns.
	utc := func(at time.Time) string { return "'" + at.UTC().Format("2006-01-02 15:04:05.999999") + "'::timestamp" }
	// Replicas held between applied decisions, from the last one before
	// the period (or the first one's from), as window functions.
	replicaSQL := func(name string, since, until time.Time) (hours, zero float64) {
		testenv.QueryRow(t, s.dbURL, fmt.Sprintf(`WITH applied AS (
				SELECT id, time, from_replicas, to_replicas FROM scaling_decisions WHERE namespace = '%s' AND name = '%s' AND NOT dry_run),
			steps AS (
				SELECT 0::bigint AS id, %[3]s AS t, coalesce((SELECT to_replicas FROM applied WHERE time < %[3]s ORDER BY time DESC, id DESC LIMIT 1),
					(SELECT from_replicas FROM applied WHERE time >= %[3]s ORDER BY time, id LIMIT 1)) AS r
				UNION ALL SELECT id, time, to_replicas FROM applied WHERE time >= %[3]s AND time < %[4]s),
			spans AS (SELECT r, extract(epoch FROM lead(t, 1, %[4]s) OVER (ORDER BY t, id) - t) AS d FROM steps)
			SELECT (sum(r * d) / 3600)::float8, (coalesce(sum(d) FILTER (WHERE r = 0), 0))::float8 FROM spans`,
			s.namespace, name, lit(since), lit(until)), &hours, &zero)
		return hours, zero
	}
	for _, tc := range []struct {
		name              string
		t                 console.Totals
		since, until      time.Time
		wantHours, wantAt float64
	}{
		{"busy", row("busy").Current, since, until, 50, 0},
		{"asleep", row("asleep").Current, since, until, 0, 86400},
		// Before its scale to zero, 30 hours ago, "asleep" had the one
		// replica that decision came from.
		{"asleep", row("asleep").Previous, previous, since, 18, 6 * 3600},
	} {
		hours, zero := replicaSQL(tc.name, tc.since, tc.until)
		if tc.t.ReplicaHours == nil || tc.t.TimeAtZeroSeconds == nil {
			t.Errorf("%s from %s: replica-hours %v, time at zero %v, want figures", tc.name, tc.since, tc.t.ReplicaHours, tc.t.TimeAtZeroSeconds)
			continue
		}
		if got, at := *tc.t.ReplicaHours, *tc.t.TimeAtZeroSeconds; math.Abs(got-hours) > 1e-6 || math.Abs(got-tc.wantHours) > 1e-6 ||
			math.Abs(at-zero) > 1e-3 || math.Abs(at-tc.wantAt) > 1e-3 {
			t.Errorf("%s from %s: %v replica-hours and %v s at zero; SQL %v and %v, by hand %v and %v", tc.name, tc.since, got, at, hours, zero, tc.wantHours, tc.wantAt)
		}
	}
	var rejected, rejectedBefore int64
	testenv.QueryRow(t, s.dbURL, fmt.Sprintf(`SELECT count(*) FILTER (WHERE timestamp >= %[2]s), count(*) FILTER (WHERE timestamp < %[2]s) FROM proxy_logs
		WHERE route = '%[1]s/asleep' AND response_status = 503 AND upstream_host = '' AND response_flags = ''
		AND timestamp >= %[3]s AND timestamp < %[4]s`, s.namespace, utc(since), utc(previous), utc(until)), &rejected, &rejectedBefore)
	if a := row("asleep"); a.Current.RejectedHeld != rejected || a.Previous.RejectedHeld != rejectedBefore || rejected != 30 || rejectedBefore != 5 {
		t.Errorf("asleep's rejected held requests %d (before %d); SQL %d (%d), by hand 30 (5)", a.Current.RejectedHeld, a.Previous.RejectedHeld, rejected, rejectedBefore)
	}
	// busy's one wake held its first request from 10 ms before the
	// decision to its release 990 ms after: 1 s.
	if b := row("busy").Current; b.ColdStarts != 1 || fmt.Sprint(ptrValue(b.HoldP50Seconds), ptrValue(b.HoldP95Seconds), ptrValue(b.LongestHoldSeconds)) != "1 1 1" {
		t.Errorf("busy's cold starts %d, held p50 %v p95 %v max %v s; want 1 wake of 1 s", b.ColdStarts, ptrValue(b.HoldP50Seconds), ptrValue(b.HoldP95Seconds), ptrValue(b.LongestHoldSeconds))
	}
	if b := row("busy"); b.Current.RejectedHeld != 0 {
		t.Errorf("busy's pod 503s count as %d rejected held requests", b.Current.RejectedHeld)
	}
	var changes int64
	testenv.QueryRow(t, s.dbURL, fmt.Sprintf(`SELECT count(*) FROM loadbalancer_settings WHERE environment = '%s' AND updated_at >= %s AND updated_at < %s`,
		s.env, utc(since), utc(until)), &changes)
	found := false
	for _, e := range rep.Environments {
		if e.Environment == s.env {
			found = true
			if e.Current.SettingsChanges != changes || changes != 2 || e.Current.RejectedHeld != 30 {
				t.Errorf("%s: %d settings changes and %d rejected held requests; SQL %d changes, by hand 2 and 30", s.env, e.Current.SettingsChanges, e.Current.RejectedHeld, changes)
			}
		}
	}
	if !found {
		t.Errorf("report has no environment %s: %s", s.env, body)
	}
	// The CSV carries the same figures: asleep's current line.
	code, body = s.request(http.MethodGet, "/reports?format=csv&since="+since.Format(time.RFC3339Nano)+"&until="+until.Format(time.RFC3339Nano), "", token)
	lines, err := csv.NewReader(strings.NewReader(body)).ReadAll()
	if code != http.StatusOK || err != nil || len(lines) == 0 {
		t.Fatalf("GET /reports?format=csv: %d %v %s", code, err, body)
	}
	col := map[string]int{}
	for i, h := range lines[0] {
		col[h] = i
	}
	for _, l := range lines[1:] {
		if l[col["scope"]] == "route" && l[col["name"]] == s.namespace+"/asleep" && l[col["period"]] == "current" {
			if got := []string{l[col["replica_hours"]], l[col["time_at_zero_s"]], l[col["rejected_held"]]}; fmt.Sprint(got) != "[0 86400 30]" {
				t.Errorf("csv: asleep's replica-hours, seconds at zero, rejected %v, want [0 86400 30]", got)
			}
			return
		}
	}
	t.Errorf("csv has no current line of asleep:\n%s", body)
}

func ptrValue(v *float64) any {
	if v == nil {
		return nil
	}
	return *v
}

func saveScreenshot(t *testing.T, b *browser, path string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
}
