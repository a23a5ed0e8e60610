package tests

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nemesis-ml/nemesis/internal/dev/servers"
	"github.com/nemesis-ml/nemesis/internal/pki"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

// TestProxyLogsThroughTheLogShipper: with --access-log-file, Envoy writes
// its entries to a file and `nemesis logship` streams them to serve. Every
// request has its row, once, across rotations, a restart of the shipper
// and serve gone for a while; a shipper with another environment's
// certificate gets nothing stored.
func TestProxyLogsThroughTheLogShipper(t *testing.T) {
	file := filepath.Join(testenv.Dir(t, "accesslog"), "access.log")
	s := newStack(t, "--proxy-log-flush-interval", "200ms", "--access-log-file", file)
	host := testenv.NewHost(t)
	backends := startStatusBackends(t, host, "a", "b")
	slow := backends[1]
	slow.delay.Store(int64(100 * time.Millisecond))
	s.publish("demo", "/models/demo", backends)
	envoy := s.startEnvoy()
	s.waitHosts(envoy, s.namespace+"/demo", 2)
	base := fmt.Sprintf("http://127.0.0.1:%d", s.envoyPort)

	ship := func(tlsDir, environment string) *servers.Process {
		// 64 KiB rotations: a few hundred requests each.
		return testenv.Process(t, "nemesis-logship", exec.Command(nemesisBin, "logship",
			"--file", file, "--serve-address", s.xdsAddr, "--tls-dir", tlsDir,
			"--node-id", "envoy-0", "--environment", environment, "--envoy-admin", envoy.AdminURL(),
			"--rotate-bytes", "65536", "--interval", "100ms", "--shutdown-grace", "1s", "--log-level", "debug"))
	}
	shipper := ship(filepath.Join(s.tls.Dir, pki.EnvoyDir(s.env)), s.env)

	seen := sendAll(t, base, 0, 1000, 8)
	s.waitLogs(1000, 30*time.Second)
	addr := map[string]string{}
	for _, b := range backends {
		addr[b.name] = b.addr
	}
	all, _ := s.logs("", 1000)
	byPath := map[string]proxyLog{}
	for _, l := range all {
		u, err := url.Parse(l.TargetURL)
		if err != nil {
			t.Fatal(err)
		}
		byPath[u.Path] = l
	}
	for _, c := range seen {
		s.checkRow(c, byPath[c.path], addr, slow)
	}
	// About 250 bytes a record: unrotated, the file would hold 250 KB.
	if info, err := os.Stat(file); err != nil || info.Size() > 128<<10 {
		t.Fatalf("the access-log file after 1000 requests, rotated past 64 KiB: %v %v", info.Size(), err)
	}

	code, _, err := get(&http.Client{Timeout: 5 * time.Second}, base+"/nowhere")
	if err != nil || code != http.StatusNotFound {
		t.Fatalf("GET /nowhere: %d %v", code, err)
	}
	s.waitLogs(1001, 10*time.Second)
	nowhere, _ := s.logs("target_url="+url.QueryEscape(fmt.Sprintf("http://127.0.0.1:%d/nowhere", s.envoyPort)), 10)
	if len(nowhere) != 1 || nowhere[0].ResponseStatus != 404 || nowhere[0].ResponseFlags != "NR" || nowhere[0].UpstreamHost != "" {
		t.Fatalf("rows of /nowhere: %+v", nowhere)
	}

	// The shipper stopped: Envoy's lines wait in the file, and the next
	// shipper starts where the last acknowledged batch ended.
	if err := shipper.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	sendAll(t, base, 1000, 300, 4)
	shipper = ship(filepath.Join(s.tls.Dir, pki.EnvoyDir(s.env)), s.env)
	s.waitLogs(1301, 30*time.Second)

	// serve gone: the shipper holds the batch and sends it when serve is back.
	if err := s.serve.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	sendAll(t, base, 1300, 300, 4)
	time.Sleep(time.Second)
	s.startServe()
	s.waitLogs(1601, 30*time.Second)
	if log := shipper.Log(1 << 20); !strings.Contains(log, "log shipping") {
		t.Fatalf("the shipper logged no failed batch while serve was gone:\n%s", log)
	}

	// Another environment's certificate claiming this one: refused, nothing stored.
	if err := shipper.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	rogue := ship(filepath.Join(s.tls.Dir, pki.EnvoyDir(otherEnvironment)), s.env)
	sendAll(t, base, 1600, 100, 4)
	testenv.Eventually(t, 10*time.Second, "the rogue shipper refused", func() error {
		if log := rogue.Log(1 << 20); !strings.Contains(log, "PermissionDenied") {
			return fmt.Errorf("no refusal in its log yet")
		}
		return nil
	})
	if got, _ := s.countLogs("true"); got != 1601 {
		t.Fatalf("%d rows after the rogue shipper, want 1601", got)
	}
	if err := rogue.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	ship(filepath.Join(s.tls.Dir, pki.EnvoyDir(s.env)), s.env)
	s.waitLogs(1701, 30*time.Second)
	t.Logf("1701 requests, 1701 rows; shipper position %s", strconv.Quote(strings.TrimSpace(string(readFile(t, file+".pos")))))
}
