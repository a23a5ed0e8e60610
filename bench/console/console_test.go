// Package console_test measures the console's pages under 20 concurrent
// readers against GET /proxy/logs (a page of 100 rows, newest first) in
// the same run, on 500,000 proxy-log rows of the last hour, 20
// autoscalers and 20,000 decisions.
//
//	make bench   # or: go test -run '^$' -bench . -benchtime 1x ./bench/console
package console_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nemesis-ml/nemesis/console"
	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/controller/decisions"
	"github.com/nemesis-ml/nemesis/extproc/logquery"
	"github.com/nemesis-ml/nemesis/internal/database"
	"github.com/nemesis-ml/nemesis/internal/httpauth"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
	"github.com/nemesis-ml/nemesis/xds/server"
	"github.com/nemesis-ml/nemesis/xds/settingsdb"
)

func TestMain(m *testing.M) { testenv.Run(m) }

const (
	readers     = 20
	perReader   = 25 // requests per reader and page
	logRows     = 500_000
	autoscalers = 20
	decisionsN  = 20_000
	readToken   = "bench-read-token"
)

func BenchmarkConsolePages(b *testing.B) {
	_, dbURL := testenv.Database(b)
	kube := testenv.KubeClient(b)
	ns := fmt.Sprintf("bench-%d", testenv.Port(b))
	ctx := context.Background()
	testenv.Exec(b, dbURL, `INSERT INTO proxy_logs (timestamp, client_ip, target_url, http_method, response_status, latency_ms, environment, route)
		SELECT now() AT TIME ZONE 'UTC' - (i * 7.2 || ' milliseconds')::interval, '10.0.0.1', 'http://models/m' || (i % $2) || '/predict',
			'POST', CASE WHEN i % 50 = 0 THEN 503 ELSE 200 END, i % 300, 'production', $1 || '/m' || (i % $2)
		FROM generate_series(1, $3) AS i`, ns, autoscalers, logRows)
	testenv.Exec(b, dbURL, `INSERT INTO scaling_decisions (namespace, name, time, from_replicas, to_replicas, action, rule, reason, inputs)
		SELECT $1, 'm' || (i % $2), now() - (i || ' seconds')::interval, i % 4, (i + 1) % 4, 'INCREASE_INSTANCES', 'cpu-high', 'bench',
			'[{"rule":"cpu-high","metric":"CPU_USAGE","operator":"GREATER_THAN","value":800,"threshold":700,"window_seconds":30}]'
		FROM generate_series(1, $3) AS i`, ns, autoscalers, decisionsN)
	testenv.Exec(b, dbURL, `ANALYZE`)
	if err := kube.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		b.Fatal(err)
	}
	for i := range autoscalers {
		ca := &v1alpha1.CustomAutoscaler{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("m%d", i), Namespace: ns},
			Spec: v1alpha1.CustomAutoscalerSpec{
				ScaleTargetRef: v1alpha1.ScaleTargetReference{APIVersion: "apps/v1", Kind: "Deployment", Name: fmt.Sprintf("m%d", i)},
				MinReplicas:    0, MaxReplicas: 4,
				Rules: []v1alpha1.ScalingRule{{ID: "cpu-high", Action: v1alpha1.ActionIncreaseInstances, WindowSeconds: 30,
					Thresholds: []v1alpha1.Threshold{{MetricType: v1alpha1.MetricCPUUsage, Operator: v1alpha1.OperatorGreaterThan, Value: 700}}}},
			},
		}
		if err := kube.Create(ctx, ca); err != nil {
			b.Fatal(err)
		}
	}

	pool, err := database.Open(ctx, dbURL)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	log := slog.New(slog.DiscardHandler)
	logs, err := logquery.New(pool, log, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	// The readers log in as serve's do: a read token, sent as a bearer.
	auth := &httpauth.Authorizer{}
	if err := auth.Grant([]string{readToken}, httpauth.Read); err != nil {
		b.Fatal(err)
	}
	c, err := console.New(console.Config{
		Kube: kube, Pool: pool, Decisions: decisions.NewHandler(pool, log), Logs: logs, Settings: settingsdb.NewStore(pool),
		Envoys: func() []server.EnvoyStatus { return nil }, SettingsAPI: http.NotFoundHandler(), Auth: auth, Log: log,
	})
	if err != nil {
		b.Fatal(err)
	}
	mux := http.NewServeMux()
	c.Register(mux)
	mux.Handle("GET /proxy/logs", auth.Require(httpauth.Read, logs))
	srv := httptest.NewServer(mux)
	b.Cleanup(srv.Close)

	pages := []string{"/ui/", "/ui/autoscalers/" + ns + "/m3", "/ui/requests?route=" + ns + "/m3", "/ui/requests", "/ui/loadbalancer"}
	for range b.N {
		base := load(b, srv.URL+"/proxy/logs")
		b.Logf("%-40s p50 %7.2f ms  p99 %7.2f ms  (baseline)", "/proxy/logs", ms(pct(base, 50)), ms(pct(base, 99)))
		worst := time.Duration(0)
		for _, p := range pages {
			d := load(b, srv.URL+p)
			worst = max(worst, pct(d, 99))
			b.Logf("%-40s p50 %7.2f ms  p99 %7.2f ms  p99/baseline %.1f", p, ms(pct(d, 50)), ms(pct(d, 99)), float64(pct(d, 99))/float64(pct(base, 99)))
		}
		b.ReportMetric(ms(worst), "worst-page-p99-ms")
		b.ReportMetric(float64(worst)/float64(pct(base, 99)), "worst-p99/baseline-p99")
		b.ReportMetric(0, "ns/op")
		b.Logf("worst page p99 %.2f ms (goal < 200 ms) under %d readers, %d proxy-log rows", ms(worst), readers, logRows)
	}
}

// load runs readers goroutines asking for url perReader times each and
// returns the durations, sorted; any answer but 200 fails the benchmark.
func load(b *testing.B, url string) []time.Duration {
	var mu sync.Mutex
	var out []time.Duration
	var wg sync.WaitGroup
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: readers}}
	for range readers {
		wg.Go(func() {
			for range perReader {
				req, err := http.NewRequest(http.MethodGet, url, nil)
				if err != nil {
					b.Error(err)
					return
				}
				req.Header.Set("Authorization", "Bearer "+readToken)
				start := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				d := time.Since(start)
				if resp.StatusCode != http.StatusOK {
					b.Errorf("%s: %d", url, resp.StatusCode)
					return
				}
				mu.Lock()
				out = append(out, d)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(out) == 0 {
		b.FailNow()
	}
	slices.Sort(out)
	return out
}

func pct(sorted []time.Duration, p int) time.Duration { return sorted[(len(sorted)-1)*p/100] }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
