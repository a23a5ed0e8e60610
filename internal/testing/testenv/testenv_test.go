package testenv_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nemesis-ml/nemesis/internal/dev/servers"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

func TestEnvoyProxiesAStaticRoute(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = fmt.Fprintf(w, "backend saw %s %s", r.Method, r.URL.Path)
	}))
	t.Cleanup(backend.Close)
	_, backendPort, _ := net.SplitHostPort(backend.Listener.Addr().String())

	listenPort := testenv.Port(t)
	tmpl, err := os.ReadFile("testdata/static-bootstrap.yaml")
	if err != nil {
		t.Fatal(err)
	}
	bootstrap := strings.NewReplacer("LISTEN_PORT", strconv.Itoa(listenPort), "BACKEND_PORT", backendPort).Replace(string(tmpl))
	dir := testenv.Dir(t, "envoy")
	path := filepath.Join(dir, "bootstrap.yaml")
	if err := os.WriteFile(path, []byte(bootstrap), 0o644); err != nil {
		t.Fatal(err)
	}
	envoy := testenv.Envoy(t, servers.EnvoyConfig{Bootstrap: path, Dir: dir})

	if err := envoy.WaitLive(t.Context(), 10*time.Second); err != nil {
		t.Fatalf("admin /ready: %v", err)
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/models/demo", listenPort))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != "backend saw GET /models/demo" {
		t.Fatalf("through envoy: %d %q", resp.StatusCode, body)
	}
	if got := resp.Header.Get("x-envoy-upstream-service-time"); got == "" {
		t.Error("response did not pass through Envoy's router (no x-envoy-upstream-service-time)")
	}
}

func TestRedisAnswersSortedSetsAsTheSeedUsesThem(t *testing.T) {
	rdb := testenv.RedisClient(t, testenv.Redis(t))
	ctx := testenv.Context(t, 10*time.Second)
	now := time.Now().Unix()
	key := "podmetric:default/model-0"
	for i, member := range []string{`{"cpuUsage":100}`, `{"cpuUsage":200}`, `{"cpuUsage":300}`} {
		if err := rdb.ZAdd(ctx, key, redis.Z{Score: float64(now - int64(20*i)), Member: member}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	got, err := rdb.Do(ctx, "ZRANGEBYSCORE", key, now-30, now).StringSlice()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`{"cpuUsage":200}`, `{"cpuUsage":100}`}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("ZRANGEBYSCORE over the last 30s = %v, want %v", got, want)
	}
}

func TestPostgresRestartsOnItsDataAndPort(t *testing.T) {
	pg, url := testenv.Database(t)
	testenv.Exec(t, url, `INSERT INTO loadbalancer_settings (environment, policy, max_connections, timeout_seconds) VALUES ('default', 'random', 10, 5)`)
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := pg.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	var policy string
	testenv.QueryRow(t, url, `SELECT policy FROM loadbalancer_settings`, &policy)
	if policy != "random" {
		t.Fatalf("after restart policy = %q, want random", policy)
	}
}

func TestHostIsReachableAndNotOnLoopback(t *testing.T) {
	host := testenv.NewHost(t)
	if ip := net.ParseIP(host.Addr); ip == nil || ip.IsLoopback() {
		t.Fatalf("host address %q", host.Addr)
	}
	l := host.Listen(t)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "from the host")
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	resp, err := http.Get("http://" + l.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "from the host" {
		t.Fatalf("got %q", body)
	}
	// The socket is in the host's namespace, not ours: nothing listens on
	// that port on loopback.
	_, port, _ := net.SplitHostPort(l.Addr().String())
	if c, err := net.Dial("tcp", "127.0.0.1:"+port); err == nil {
		_ = c.Close()
		t.Fatal("the host's listener is reachable on loopback")
	}
}
