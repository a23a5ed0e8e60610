package tests

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

// proxyLog is a row of GET /proxy/logs.
type proxyLog struct {
	ID             int64     `json:"id"`
	Timestamp      time.Time `json:"timestamp"`
	ClientIP       string    `json:"client_ip"`
	TargetURL      string    `json:"target_url"`
	HTTPMethod     string    `json:"http_method"`
	ResponseStatus int       `json:"response_status"`
	LatencyMS      *int      `json:"latency_ms"`
	Environment    string    `json:"environment"`
	Route          string    `json:"route"`
	UpstreamHost   string    `json:"upstream_host"`
	ResponseFlags  string    `json:"response_flags"`
	RequestID      string    `json:"request_id"`
}

// sent is what the client saw of one request.
type sent struct {
	method, path string
	status       int
	backend      string // body: the name of the backend that answered
}

// startStatusBackends starts backends that answer with the status their
// path ends in (/404, /500, else 200) and their name, counting requests.
func startStatusBackends(t *testing.T, host *testenv.Host, names ...string) []*backend {
	t.Helper()
	var out []*backend
	for _, name := range names {
		b := &backend{name: name}
		l := host.Listen(t)
		b.addr = l.Addr().String()
		port, _ := strconv.Atoi(b.addr[strings.LastIndex(b.addr, ":")+1:])
		b.port = int32(port)
		srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			if d := time.Duration(b.delay.Load()); d > 0 {
				time.Sleep(d)
			}
			b.served.Add(1)
			code := http.StatusOK
			if c, err := strconv.Atoi(r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]); err == nil {
				code = c
			}
			w.WriteHeader(code)
			_, _ = io.WriteString(w, b.name)
		})}
		go func() { _ = srv.Serve(l) }()
		t.Cleanup(func() { _ = srv.Close() })
		out = append(out, b)
	}
	return out
}

var methods = []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete}

// send makes request i: its method, and a unique path ending in the status
// the backend is to answer.
func send(c *http.Client, base string, i int) (sent, error) {
	status := []int{200, 200, 200, 200, 200, 200, 404, 404, 500, 500}[i%10]
	s := sent{method: methods[i%len(methods)], path: fmt.Sprintf("/models/demo/item/%d/%d", i, status)}
	req, err := http.NewRequest(s.method, base+s.path, strings.NewReader("x"))
	if err != nil {
		return s, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return s, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	s.status, s.backend = resp.StatusCode, string(body)
	return s, err
}

// sendAll sends requests first..first+n-1 from workers goroutines.
func sendAll(t *testing.T, base string, first, n, workers int) []sent {
	t.Helper()
	out := make([]sent, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			c := &http.Client{Timeout: 30 * time.Second}
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				s, err := send(c, base, first+i)
				if err != nil {
					errs <- err
					return
				}
				out[i] = s
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return out
}

// logs pages through GET /proxy/logs with query and limit, following the
// Link header, and returns every row and the number of pages.
func (s *stack) logs(query string, limit int) ([]proxyLog, int) {
	s.t.Helper()
	next := "/proxy/logs?" + query + "&limit=" + strconv.Itoa(limit)
	var out []proxyLog
	pages := 0
	for next != "" {
		req, err := http.NewRequestWithContext(s.t.Context(), http.MethodGet, s.apiURL+next, nil)
		if err != nil {
			s.t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+readToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			s.t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			s.t.Fatalf("GET %s: %d %s", next, resp.StatusCode, body)
		}
		page := decode[[]proxyLog](s.t, string(body))
		if len(page) > limit {
			s.t.Fatalf("GET %s: %d rows, limit %d", next, len(page), limit)
		}
		out = append(out, page...)
		pages++
		next = ""
		if m := linkNext.FindStringSubmatch(resp.Header.Get("Link")); m != nil {
			next = m[1]
		}
	}
	return out, pages
}

var linkNext = regexp.MustCompile(`^<([^>]+)>; rel="next"$`)

func (s *stack) countLogs(where string) (total, distinct int) {
	s.t.Helper()
	testenv.QueryRow(s.t, s.dbURL, `SELECT count(*), count(DISTINCT target_url) FROM proxy_logs WHERE `+where, &total, &distinct)
	return total, distinct
}

// waitLogs waits until proxy_logs holds n rows, then a flush longer, and
// checks that no more arrived.
func (s *stack) waitLogs(n int, timeout time.Duration) {
	s.t.Helper()
	testenv.Eventually(s.t, timeout, fmt.Sprintf("%d proxy log rows", n), func() error {
		if got, _ := s.countLogs("true"); got < n {
			return fmt.Errorf("%d rows", got)
		}
		return nil
	})
	time.Sleep(2 * time.Second)
	if got, distinct := s.countLogs("true"); got != n || distinct != n {
		s.t.Fatalf("proxy_logs has %d rows for %d distinct URLs, want %d of each", got, distinct, n)
	}
}

func TestProxyLogsRecordEveryRequest(t *testing.T) {
	s := newStack(t, "--proxy-log-flush-interval", "200ms")
	host := testenv.NewHost(t)
	backends := startStatusBackends(t, host, "a", "b", "c")
	slow := backends[2]
	slow.delay.Store(int64(100 * time.Millisecond))
	s.publish("demo", "/models/demo", backends)
	envoy := s.startEnvoy()
	s.waitHosts(envoy, s.namespace+"/demo", 3)
	base := fmt.Sprintf("http://127.0.0.1:%d", s.envoyPort)

	const n = 2000
	seen := sendAll(t, base, 0, n, 8)
	s.waitLogs(n, 30*time.Second)

	all, pages := s.logs("", 37)
	if len(all) != n || pages != (n+36)/37 {
		t.Fatalf("paging by 37: %d rows in %d pages, want %d in %d", len(all), pages, n, (n+36)/37)
	}
	addr := map[string]string{}
	for _, b := range backends {
		addr[b.name] = b.addr
	}
	byPath := map[string]proxyLog{}
	for i, l := range all {
		if i > 0 && (l.Timestamp.After(all[i-1].Timestamp) || (l.Timestamp.Equal(all[i-1].Timestamp) && l.ID > all[i-1].ID)) {
			t.Fatalf("row %d (%v, id %d) is newer than the one before it", i, l.Timestamp, l.ID)
		}
		u, err := url.Parse(l.TargetURL)
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := byPath[u.Path]; dup {
			t.Fatalf("%s paged twice", u.Path)
		}
		byPath[u.Path] = l
	}
	perBackend := map[string]int{}
	for _, c := range seen {
		perBackend[s.checkRow(c, byPath[c.path], addr, slow).UpstreamHost]++
	}
	for _, b := range backends {
		if int64(perBackend[b.addr]) != b.served.Load() {
			t.Fatalf("backend %s served %d, proxy_logs names it %d times", b.name, b.served.Load(), perBackend[b.addr])
		}
	}

	// Each filter against what the client saw.
	expect := func(keep func(c sent, l proxyLog) bool) []string {
		var paths []string
		for _, c := range seen {
			if keep(c, byPath[c.path]) {
				paths = append(paths, c.path)
			}
		}
		return paths
	}
	mid := all[n/2].Timestamp
	for query, keep := range map[string]func(c sent, l proxyLog) bool{
		"status=404":  func(c sent, _ proxyLog) bool { return c.status == 404 },
		"status=5xx":  func(c sent, _ proxyLog) bool { return c.status >= 500 },
		"method=POST": func(c sent, _ proxyLog) bool { return c.method == http.MethodPost },
		"method=DELETE&status=200": func(c sent, _ proxyLog) bool {
			return c.method == http.MethodDelete && c.status == 200
		},
		"target_url=" + url.QueryEscape("http://"+addr[seen[7].backend]+seen[7].path): func(c sent, _ proxyLog) bool {
			return c.path == seen[7].path
		},
		"target_url=" + url.QueryEscape("http://"+slow.addr+"/models/demo/item/1*"): func(c sent, _ proxyLog) bool {
			return c.backend == slow.name && strings.HasPrefix(c.path, "/models/demo/item/1")
		},
		"client_ip=127.0.0.1":                   func(sent, proxyLog) bool { return true },
		"client_ip=127.0.0.0/8":                 func(sent, proxyLog) bool { return true },
		"client_ip=10.0.0.0/8":                  func(sent, proxyLog) bool { return false },
		"environment=" + s.env:                  func(sent, proxyLog) bool { return true },
		"environment=elsewhere":                 func(sent, proxyLog) bool { return false },
		"since=" + mid.Format(time.RFC3339Nano): func(_ sent, l proxyLog) bool { return !l.Timestamp.Before(mid) },
		"until=" + mid.Format(time.RFC3339Nano): func(_ sent, l proxyLog) bool { return l.Timestamp.Before(mid) },
		"min_latency_ms=90":                     func(_ sent, l proxyLog) bool { return *l.LatencyMS >= 90 },
	} {
		t.Run(query, func(t *testing.T) {
			got, _ := s.logs(query, 1000)
			var paths []string
			for _, l := range got {
				u, _ := url.Parse(l.TargetURL)
				paths = append(paths, u.Path)
			}
			want := expect(keep)
			slices.Sort(paths)
			slices.Sort(want)
			if !slices.Equal(paths, want) {
				t.Fatalf("%d rows, want %d", len(paths), len(want))
			}
		})
	}

	t.Run("no route keeps Envoy's flag", func(t *testing.T) {
		code, _, err := get(&http.Client{Timeout: 5 * time.Second}, base+"/nowhere")
		if err != nil || code != http.StatusNotFound {
			t.Fatalf("GET /nowhere: %d %v", code, err)
		}
		var got []proxyLog
		testenv.Eventually(t, 10*time.Second, "the row of /nowhere", func() error {
			got, _ = s.logs("target_url="+url.QueryEscape(fmt.Sprintf("http://127.0.0.1:%d/nowhere", s.envoyPort)), 10)
			if len(got) != 1 {
				return fmt.Errorf("%d rows", len(got))
			}
			return nil
		})
		if got[0].ResponseStatus != 404 || got[0].ResponseFlags != "NR" || got[0].UpstreamHost != "" {
			t.Fatalf("row of /nowhere: %+v", got[0])
		}
	})

	t.Run("bad parameters are refused naming them", func(t *testing.T) {
		for query, field := range map[string]string{
			"status=6xx": "status", "since=yesterday": "since", "limit=5000": "limit",
			"client_ip=nope": "client_ip", "cursor=zzz": "cursor", "sort=asc": "sort",
			"cursor=%%%": "cursor", "min_latency_ms=3000000000": "min_latency_ms", "route=a%00": "route",
		} {
			code, body := s.request(http.MethodGet, "/proxy/logs?"+query, "", readToken)
			if got := decode[struct{ Error, Field string }](t, body); code != http.StatusBadRequest || got.Field != field {
				t.Errorf("%s: %d %s, want 400 naming %s", query, code, body, field)
			}
		}
	})
}

// checkRow holds l, the row of the request the client sent as c, to what
// the client saw: served by the backend named in addr (slow waits 100 ms),
// through the route demo of the stack.
func (s *stack) checkRow(c sent, l proxyLog, addr map[string]string, slow *backend) proxyLog {
	s.t.Helper()
	switch {
	case l.ID == 0:
		s.t.Fatalf("%s %s has no row", c.method, c.path)
	case l.HTTPMethod != c.method || l.ResponseStatus != c.status:
		s.t.Fatalf("%s %s answered %d, logged as %s %d", c.method, c.path, c.status, l.HTTPMethod, l.ResponseStatus)
	case l.TargetURL != "http://"+addr[c.backend]+c.path || l.UpstreamHost != addr[c.backend]:
		s.t.Fatalf("%s %s served by %s (%s), logged as %s via %s", c.method, c.path, c.backend, addr[c.backend], l.TargetURL, l.UpstreamHost)
	case l.ClientIP != "127.0.0.1" || l.Environment != s.env || l.Route != s.namespace+"/demo" || l.RequestID == "" || l.LatencyMS == nil:
		s.t.Fatalf("row of %s: %+v", c.path, l)
	case c.backend == slow.name && *l.LatencyMS < 100:
		s.t.Fatalf("%s waited 100 ms in the slow backend, logged %d ms", c.path, *l.LatencyMS)
	}
	return l
}

func TestProxyLogsSurvivePostgresOutage(t *testing.T) {
	// Little memory, so the outage's rows also go through the spill folder.
	s := newStack(t, "--proxy-log-flush-interval", "200ms", "--proxy-log-batch-size", "100", "--proxy-log-memory-rows", "500")
	host := testenv.NewHost(t)
	backends := startStatusBackends(t, host, "a", "b")
	s.publish("demo", "/models/demo", backends)
	envoy := s.startEnvoy()
	s.waitHosts(envoy, s.namespace+"/demo", 2)
	base := fmt.Sprintf("http://127.0.0.1:%d", s.envoyPort)

	stop := make(chan struct{})
	var total atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	for w := range 4 {
		wg.Go(func() {
			c := &http.Client{Timeout: 10 * time.Second}
			for i := w; ; i += 4 {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := send(c, base, i); err != nil {
					errc <- err
					return
				}
				total.Add(1)
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	time.Sleep(2 * time.Second)
	if err := s.pg.Stop(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Second)
	if err := s.pg.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		t.Fatalf("a request through Envoy failed: %v", err)
	}
	n := int(total.Load())
	s.waitLogs(n, 60*time.Second)

	_, metrics := s.request(http.MethodGet, "/metrics", "", readToken)
	spilled := regexp.MustCompile(`(?m)^nemesis_proxy_logs_rows_spilled_total ([0-9.e+]+)$`).FindStringSubmatch(metrics)
	dropped := regexp.MustCompile(`(?m)^nemesis_proxy_logs_rows_dropped_total 0$`).MatchString(metrics)
	if spilled == nil || spilled[1] == "0" || !dropped {
		t.Fatalf("after %d requests across the outage, want rows spilled and none dropped:\n%s", n,
			strings.Join(regexp.MustCompile(`(?m)^nemesis_proxy_logs_.*$`).FindAllString(metrics, -1), "\n"))
	}
	t.Logf("%d requests, every one logged once; spilled rows %s", n, spilled[1])
}
