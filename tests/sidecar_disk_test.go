package tests

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nemesis-ml/nemesis/controller/podmetric"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

// TestSidecarWithAnUnreadableFolderStillSendsSamples runs `nemesis sidecar`
// as an unprivileged user metering a folder in which the model made a 0700
// folder of its own: the folder is left out and counted, and samples with
// CPU, memory and response time keep arriving.
func TestSidecarWithAnUnreadableFolderStillSendsSamples(t *testing.T) {
	s := newStack(t)
	rdb := testenv.RedisClient(t, s.redis)

	model := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		time.Sleep(20 * time.Millisecond)
		_, _ = w.Write([]byte(`{"class":"cat"}`))
	})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = model.Serve(l) }()
	t.Cleanup(func() { _ = model.Close() })

	cache := testenv.Dir(t, "model-cache") // 0755: the sidecar can read it
	if err := os.WriteFile(filepath.Join(cache, "weights.bin"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	private := filepath.Join(cache, "private")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}

	listen := fmt.Sprintf("127.0.0.1:%d", testenv.Port(t))
	admin := fmt.Sprintf("127.0.0.1:%d", testenv.Port(t))
	// As nobody: root reads every folder, whatever its mode. The built
	// binary's folder is root's alone, so nobody runs a copy.
	bin := filepath.Join(testenv.Dir(t, "bin"), "nemesis")
	raw, err := os.ReadFile(nemesisBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, raw, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "sidecar", "--mode", "proxy",
		"--listen", listen, "--admin-listen", admin,
		"--model-url", "http://"+l.Addr().String(), "--pod-namespace", s.namespace, "--pod-name", "model-0",
		"--controller-url", s.apiURL, "--controller-token", metricsToken, "--push-interval", "1s", "--disk-paths", cache,
		"--meter", "processes", "--meter-pid", strconv.Itoa(os.Getpid()))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	testenv.Process(t, "nemesis-sidecar", cmd)
	key := "podmetric:" + s.namespace + "/model-0"

	var last podmetric.Sample
	testenv.Eventually(t, 30*time.Second, "samples with response time and disk", func() error {
		if _, _, err := get(http.DefaultClient, "http://"+listen+"/predict"); err != nil {
			return err
		}
		members, err := rdb.ZRange(t.Context(), key, 0, -1).Result()
		if err != nil || len(members) < 3 {
			return fmt.Errorf("%d samples, %v", len(members), err)
		}
		for _, m := range members {
			var smp podmetric.Sample
			if err := json.Unmarshal([]byte(m), &smp); err != nil {
				return err
			}
			if smp.AverageResponseTime >= 20 && smp.DiskUsage >= 1 && smp.MemoryUsage > 0 {
				last = smp
				return nil
			}
		}
		return fmt.Errorf("no sample with response time, memory and the readable disk yet: %s", members[len(members)-1])
	})
	t.Logf("sample: %+v", last)

	_, metrics, err := get(http.DefaultClient, "http://"+admin+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(metrics, `nemesis_sidecar_meter_errors_total{kind="disk"} `) ||
		strings.Contains(metrics, `nemesis_sidecar_meter_errors_total{kind="disk"} 0`) ||
		!strings.Contains(metrics, `nemesis_sidecar_meter_errors_total{kind="cpu_memory"} 0`) {
		t.Fatalf("meter errors do not count the unreadable folder alone:\n%s", grepLines(metrics, "nemesis_sidecar_meter_errors_total"))
	}
}

func grepLines(text, prefix string) string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, prefix) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
