package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

// buildNemesis builds this command into a temporary folder.
func buildNemesis(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "nemesis")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("building nemesis: %v\n%s", err, out)
	}
	return bin
}

func TestSidecarFinishesInFlightRequestsOnSIGTERMAndRefusesNewOnes(t *testing.T) {
	bin := buildNemesis(t)

	// The model: /slow takes two seconds, long enough to SIGTERM in the middle.
	var started atomic.Int32
	model := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started.Add(1)
			time.Sleep(2 * time.Second)
		}
		_, _ = w.Write([]byte("prediction"))
	})}
	ml, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = model.Serve(ml) }()
	t.Cleanup(func() { _ = model.Close() })

	pod := fmt.Sprintf("127.0.0.1:%d", testenv.Port(t))
	admin := fmt.Sprintf("127.0.0.1:%d", testenv.Port(t))
	cmd := exec.Command(bin, "sidecar", "--mode", "proxy",
		"--listen", pod, "--admin-listen", admin,
		"--model-url", "http://"+ml.Addr().String(),
		"--meter", "processes", "--meter-pid", strconv.Itoa(os.Getpid()),
		"--shutdown-grace", "10s")
	cmd.Env = append(os.Environ(), "NEMESIS_POD_NAMESPACE=models", "NEMESIS_POD_NAME=resnet-0")
	logs := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("--- sidecar log ---\n%s", logs.String())
		}
	})
	client := &http.Client{Timeout: 15 * time.Second}
	waitReady(t, client, "http://"+admin+"/ready")

	const requests = 20
	type result struct {
		status int
		body   string
		err    error
	}
	results := make(chan result, requests)
	for range requests {
		go func() {
			// One connection each, as twenty clients would.
			c := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			resp, err := c.Get("http://" + pod + "/slow")
			if err != nil {
				results <- result{err: err}
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			results <- result{status: resp.StatusCode, body: string(b), err: err}
		}()
	}
	for deadline := time.Now().Add(10 * time.Second); started.Load() < requests; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d requests reached the model", started.Load(), requests)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	// New connections are refused while the twenty finish.
	refused := false
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		conn, err := net.DialTimeout("tcp", pod, time.Second)
		if err == nil {
			conn.Close()
			continue
		}
		// A connection the kernel queued just before the listener closed
		// is reset instead of refused: either way it is not served.
		if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("dialing the draining sidecar: %v, want connection refused", err)
		}
		refused = true
		break
	}
	if !refused {
		t.Fatal("the sidecar still accepted connections a second after SIGTERM")
	}
	if resp, err := client.Get("http://" + admin + "/ready"); err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/ready while draining: %v %v, want 503", resp, err)
	}
	if started.Load() != requests {
		t.Fatalf("%d requests reached the model, want only the %d sent before SIGTERM", started.Load(), requests)
	}

	for range requests {
		r := <-results
		if r.err != nil || r.status != http.StatusOK || r.body != "prediction" {
			t.Fatalf("in-flight request ended with %d %q %v, want 200 prediction", r.status, r.body, r.err)
		}
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("sidecar exited with %v, want 0", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("sidecar did not exit after draining")
	}
}

func TestSidecarRefusesToMeterTheWholeMachine(t *testing.T) {
	bin := buildNemesis(t)
	// On a plain host no pod cgroup is visible and PID 1 is not a pod's
	// pause process: auto must fail rather than meter the machine.
	out, err := exec.Command(bin, "sidecar", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0").CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("sidecar with --meter=auto on a plain host: %v, want exit code 1\n%s", err, out)
	}
	if want := "shareProcessNamespace"; !strings.Contains(string(out), want) {
		t.Fatalf("the error does not say what to do (%q):\n%s", want, out)
	}
}

func waitReady(t *testing.T, client *http.Client, u string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := client.Get(u)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready: %v", u, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lockedBuffer collects a process's output from two pipes at once.
type lockedBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
