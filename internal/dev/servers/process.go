// Package servers runs Nemesis's real dependencies (PostgreSQL, Redis, Envoy,
// Prometheus) as child processes on loopback, and network namespaces standing in for
// pods, for tests and for `nemesis-dev dev`.
package servers

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Process is a child process whose output goes to a log file.
type Process struct {
	Name    string
	LogPath string
	// StopSignal asks the process to stop; SIGTERM unless set.
	StopSignal syscall.Signal
	cmd        *exec.Cmd
	done       chan struct{}
	err        error
}

// Start starts cmd with stdout and stderr appended to logPath. The
// child gets its own process group and is killed if this process dies, so a
// crashed test run leaves no servers behind.
func Start(name, logPath string, cmd *exec.Cmd) (*Process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening %s log: %w", name, err)
	}
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Stop sends StopSignal to the process group, then SIGKILL after the grace period.
func (p *Process) Stop(grace time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	sig := p.StopSignal
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, sig)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
	return fmt.Errorf("%s did not stop within %s and was killed", p.Name, grace)
}

// Log returns the last maxBytes of the process's log.
func (p *Process) Log(maxBytes int64) string {
	return tail(p.LogPath, maxBytes)
}

func tail(path string, maxBytes int64) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer func() { _ = f.Close() }()
	info, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	offset := max(info.Size()-maxBytes, 0)
	buf := make([]byte, info.Size()-offset)
	if _, err := f.ReadAt(buf, offset); err != nil {
		return fmt.Sprintf("(reading log: %v)", err)
	}
	return string(buf)
}

// exitedError describes a process that ended while we waited for it.
func (p *Process) exitedError() error {
	return fmt.Errorf("%s exited early (%v); log:\n%s", p.Name, p.err, p.Log(4096))
}

// FreePort returns a port on 127.0.0.1 that nothing listens on, picked at
// random in 20000-29999: below the kernel's ephemeral range (32768 and up
// here), from which listeners on port 0 and every outgoing connection take
// their ports, so that a port handed out and closed is not taken again by
// the many connections and servers of tests running at once before its
// user binds it (a sidecar test once found another server on its admin
// port); and below Kubernetes' NodePorts (30000-32767). A port is handed
// out once per process: one picked for Envoy's listener, which Envoy binds
// only when the control plane sends it, was once handed out again for its
// admin interface.
func FreePort() (int, error) {
	handedOut.Lock()
	defer handedOut.Unlock()
	for range 100 {
		port := 20000 + rand.IntN(10000)
		if handedOut.ports[port] {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		_ = l.Close()
		handedOut.ports[port] = true
		return port, nil
	}
	return 0, errors.New("finding a free port: 100 tries in 20000-29999 were taken")
}

var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// waitFor polls ready until it succeeds, the process exits, or timeout passes.
func waitFor(p *Process, timeout time.Duration, ready func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return p.exitedError()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: %w; log:\n%s", p.Name, timeout, err, p.Log(4096))
		}
	}
}

// ToolsDir finds the folder holding the binaries that `make tools` installs:
// $NEMESIS_TOOLS_BIN, or .tools/bin in the first parent of the working
// directory that has one.
func ToolsDir() (string, error) {
	if dir := os.Getenv("NEMESIS_TOOLS_BIN"); dir != "" {
		return dir, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding tools: %w", err)
	}
	for {
		candidate := filepath.Join(dir, ".tools", "bin")
		if _, err := os.Stat(candidate); err == nil {
			return candidate, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no .tools/bin above the working directory: run `make tools`")
		}
		dir = parent
	}
}

// itoa keeps command lines readable.
func itoa(n int) string { return strconv.Itoa(n) }

// PID is the process's id.
func (p *Process) PID() int { return p.cmd.Process.Pid }
