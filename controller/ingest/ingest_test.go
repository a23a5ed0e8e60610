package ingest_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nemesis-ml/nemesis/controller/ingest"
	"github.com/nemesis-ml/nemesis/controller/store"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

func post(t *testing.T, url, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("response %d is not JSON: %q", resp.StatusCode, raw)
	}
	return resp.StatusCode, out
}

func TestIngestStoresValidSamplesAndRefusesBadOnes(t *testing.T) {
	r := testenv.Redis(t)
	rdb := testenv.RedisClient(t, r)
	srv := httptest.NewServer(ingest.New(store.New(rdb, time.Hour), ingest.Options{Registerer: prometheus.NewRegistry()}))
	t.Cleanup(srv.Close)
	ctx := testenv.Context(t, time.Minute)

	good := `{"id":"default/resnet-0","cpuUsage":800,"memoryUsage":512,"diskUsage":10,"averageResponseTime":40,"requestCount":20,"requestRate":2,"inFlightRequests":1}`
	future := time.Now().Add(time.Minute).Format(time.RFC3339)
	for name, tc := range map[string]struct {
		body  string
		code  int
		field string
	}{
		"id without slash":    {body: `{"id":"resnet-0","cpuUsage":1}`, code: 400, field: "id"},
		"id with bad pod":     {body: `{"id":"default/Resnet_0","cpuUsage":1}`, code: 400, field: "id"},
		"negative cpu":        {body: `{"id":"default/a","cpuUsage":-1}`, code: 400, field: "cpuUsage"},
		"negative rate":       {body: `{"id":"default/a","requestRate":-0.5}`, code: 400, field: "requestRate"},
		"number out of range": {body: `{"id":"default/a","memoryUsage":1e400}`, code: 400, field: "memoryUsage"},
		"string for number":   {body: `{"id":"default/a","diskUsage":"10"}`, code: 400, field: "diskUsage"},
		"unknown field":       {body: `{"id":"default/a","gpuUsage":1}`, code: 400, field: "gpuUsage"},
		"cpu past its bound":  {body: `{"id":"default/a","cpuUsage":1000001}`, code: 400, field: "cpuUsage"},
		"null number":         {body: `{"id":"default/a","cpuUsage":null}`, code: 400, field: "cpuUsage"},
		"null receivedAt":     {body: `[{"id":"default/a","receivedAt":null}]`, code: 400, field: "[0].receivedAt"},
		"receivedAt ahead":    {body: `{"id":"default/a","receivedAt":"` + future + `"}`, code: 400, field: "receivedAt"},
		"receivedAt garbage":  {body: `{"id":"default/a","receivedAt":"yesterday"}`, code: 400, field: "receivedAt"},
		"one bad in a batch":  {body: `[` + good + `,{"id":"default/b","averageResponseTime":-3}]`, code: 400, field: "[1].averageResponseTime"},
		"empty array":         {body: `[]`, code: 400},
		"sums past float64":   {body: `[{"id":"default/a","cpuUsage":1.7e308},{"id":"default/a","cpuUsage":1.6e308}]`, code: 400, field: "[0].cpuUsage"},
		"cpu past its range":  {body: `{"id":"default/a","cpuUsage":1000001}`, code: 400, field: "cpuUsage"},
		"memory past range":   {body: `{"id":"default/a","memoryUsage":16777217}`, code: 400, field: "memoryUsage"},
		"latency past a day":  {body: `{"id":"default/a","averageResponseTime":86400001}`, code: 400, field: "averageResponseTime"},
		"trailing brace":      {body: good + `}`, code: 400},
		"trailing garbage":    {body: `[` + good + `]garbage`, code: 400},
		"duplicate key":       {body: `{"id":"default/a","cpuUsage":1,"cpuUsage":2}`, code: 400, field: "cpuUsage"},
		"case-mismatched key": {body: `{"id":"default/a","CPUUsage":1}`, code: 400, field: "CPUUsage"},
		"duplicate in batch":  {body: `[` + good + `,{"id":"default/b","id":"default/c"}]`, code: 400, field: "[1].id"},
		"not json":            {body: `cpu=800`, code: 400},
		"envoy's source":      {body: `{"id":"default/a","source":"envoy","requestCount":5}`, code: 400, field: "source"},
		"unknown source":      {body: `{"id":"default/a","source":"gpu"}`, code: 400, field: "source"},
		"p95 past a day":      {body: `{"id":"default/a","p95ResponseTime":86400001}`, code: 400, field: "p95ResponseTime"},
		"body over 1 MiB":     {body: `[` + strings.Repeat(good+",", ingest.MaxBody/len(good)) + good + `]`, code: 413},
	} {
		t.Run(name, func(t *testing.T) {
			code, body := post(t, srv.URL, tc.body)
			if code != tc.code {
				t.Fatalf("status %d (%v), want %d", code, body, tc.code)
			}
			if msg, _ := body["error"].(string); msg == "" {
				t.Fatalf("body %v has no error message", body)
			}
			if tc.field != "" && body["field"] != tc.field {
				t.Fatalf("body %v does not name field %q", body, tc.field)
			}
			if n := rdb.DBSize(ctx).Val(); n != 0 {
				t.Fatalf("a refused request stored %d keys", n)
			}
		})
	}

	metered := `{"id":"default/resnet-2","source":"meter","cpuUsage":100}`
	code, body := post(t, srv.URL, `[`+good+`,`+strings.Replace(good, "resnet-0", "resnet-1", 1)+`,`+metered+`]`)
	if code != 200 || body["stored"] != 3.0 {
		t.Fatalf("valid batch: %d %v", code, body)
	}
	members, err := rdb.ZRangeWithScores(ctx, "podmetric:default/resnet-0", 0, -1).Result()
	if err != nil || len(members) != 1 {
		t.Fatalf("podmetric:default/resnet-0 = %v, %v", members, err)
	}
	// The server stamped the missing receivedAt; the score is its Unix time.
	if age := time.Since(time.Unix(int64(members[0].Score), 0)); age < 0 || age > time.Minute {
		t.Fatalf("score %v is not the time of the push", members[0].Score)
	}
	if ttl := rdb.TTL(ctx, "podmetric:default/resnet-0").Val(); ttl <= 0 || ttl > time.Hour {
		t.Fatalf("key of a pod expires in %s, want within the 1h retention", ttl)
	}

	// Redis down: 503, the sidecar retries.
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	if code, body := post(t, srv.URL, good); code != 503 {
		t.Fatalf("with redis stopped: %d %v", code, body)
	}
}

func TestIngestTrimsSamplesOlderThanTheRetention(t *testing.T) {
	rdb := testenv.RedisClient(t, testenv.Redis(t))
	srv := httptest.NewServer(ingest.New(store.New(rdb, time.Minute), ingest.Options{}))
	t.Cleanup(srv.Close)
	ctx := testenv.Context(t, time.Minute)
	at := func(ago time.Duration) string {
		return fmt.Sprintf(`{"id":"default/a","cpuUsage":%d,"receivedAt":%q}`, int(ago.Seconds()), time.Now().Add(-ago).Format(time.RFC3339Nano))
	}
	if code, body := post(t, srv.URL, "["+at(2*time.Minute)+","+at(90*time.Second)+"]"); code != 200 {
		t.Fatalf("%d %v", code, body)
	}
	if code, body := post(t, srv.URL, at(time.Second)); code != 200 {
		t.Fatalf("%d %v", code, body)
	}
	if n := rdb.ZCard(ctx, "podmetric:default/a").Val(); n != 1 {
		t.Fatalf("%d samples kept, want only the one inside the 1m retention", n)
	}
}
