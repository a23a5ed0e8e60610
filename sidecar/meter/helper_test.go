package meter

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The test binary doubles as the metered child process: with
// NEMESIS_METER_HELPER set, TestMain runs the helper instead of the tests.
const helperEnv = "NEMESIS_METER_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "burn":
		// One goroutine spinning is one core busy.
		runtime.GOMAXPROCS(2)
		go func() {
			for x := 0; ; x++ {
				_ = x
			}
		}()
		fmt.Println("ready")
		_, _ = io.Copy(io.Discard, os.Stdin)
	}
	os.Exit(0)
}

// helper is a running helper process.
type helper struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
	once  sync.Once
}

// stop ends the helper by closing its stdin and waits for it.
func (h *helper) stop() {
	h.once.Do(func() {
		_ = h.stdin.Close()
		_ = h.cmd.Wait()
	})
}

// allocScript waits for a line, then allocates 200 MiB and writes to every
// page so it is resident, and holds it until stdin closes. It is Python, not
// this test binary, because the race detector doubles what Go allocates.
const allocScript = `
import sys
print("ready", flush=True)
sys.stdin.readline()
b = bytearray(200 << 20)
for i in range(0, len(b), 4096):
    b[i] = 1
print("allocated", flush=True)
sys.stdin.read()
`

// startHelper runs the helper of the given kind ("burn" or "alloc"), through
// sh when viaShell so that the helper is a grandchild of the returned process.
func startHelper(t *testing.T, kind string, viaShell bool) *helper {
	t.Helper()
	var cmd *exec.Cmd
	switch {
	case kind == "alloc":
		cmd = exec.Command("python3", "-c", allocScript)
	case viaShell:
		// No exec: sh stays the parent of the helper.
		cmd = exec.Command("/bin/sh", "-c", `"$0" -test.run='^$'; true`, os.Args[0])
	default:
		cmd = exec.Command(os.Args[0], "-test.run=^$")
	}
	cmd.Env = append(os.Environ(), helperEnv+"="+kind)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helper{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	t.Cleanup(h.stop)
	h.expect(t, "ready")
	return h
}

func (h *helper) expect(t *testing.T, line string) {
	t.Helper()
	got, err := h.out.ReadString('\n')
	if err != nil || strings.TrimSpace(got) != line {
		t.Fatalf("helper said %q (%v), want %q", got, err, line)
	}
}

var cgroupSeq atomic.Int32

// testCgroup creates a cgroup of this test's own in the given hierarchies
// under /sys/fs/cgroup (for example "cpuacct", "memory", "unified"), moves
// the helper into it, and when the test ends stops the helper and removes
// the cgroup. It returns the cgroup's
// path as /proc/PID/cgroup would name it.
func testCgroup(t *testing.T, h *helper, hierarchies ...string) string {
	t.Helper()
	name := fmt.Sprintf("/nemesis-test-%d-%d", os.Getpid(), cgroupSeq.Add(1))
	for _, hier := range hierarchies {
		dir := filepath.Join("/sys/fs/cgroup", hier, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Skipf("cannot create a cgroup in the %s hierarchy (tests need root and cgroup v1 cpuacct and memory mounted at /sys/fs/cgroup): %v", hier, err)
		}
		t.Cleanup(func() {
			// A cgroup can only be removed once its processes are gone.
			h.stop()
			deadline := time.Now().Add(5 * time.Second)
			for {
				err := os.Remove(dir)
				if err == nil || time.Now().After(deadline) {
					if err != nil {
						t.Errorf("removing cgroup %s: %v", dir, err)
					}
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(h.cmd.Process.Pid)), 0o644); err != nil {
			t.Fatalf("moving the helper into %s: %v", dir, err)
		}
	}
	return name
}
