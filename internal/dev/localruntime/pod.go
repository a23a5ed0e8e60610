package localruntime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/nemesis-ml/nemesis/internal/dev/servers"
)

// localPod is one replica running on this machine: a network namespace
// (the pod's IP), the model process and the sidecar in front of it, and a
// relay through which the sidecar reaches the controller.
type localPod struct {
	obj        *corev1.Pod // as created; UID set
	deployment string
	hash       string
	created    time.Time
	log        *slog.Logger

	ns    *servers.Netns
	relay net.Listener

	mu          sync.Mutex
	state       podState
	terminating bool // left the endpoints; stop follows
	stopping    bool // stop has begun
	seen        bool // the pod object showed up in the cache
	written     *corev1.PodStatus

	cancel   context.CancelFunc
	done     chan struct{} // closed when the processes are gone
	stopOnce sync.Once
	stopErr  error
}

// podEnv is what starting a pod needs from the runtime.
type podEnv struct {
	nemesis         string
	dir             string
	controller      string // host:port of the controller, "" for none
	controllerToken string
	poke            func()
}

// start creates the namespace and relay and starts the processes under a
// supervisor that restarts them, both together, when either exits.
func (p *localPod) start(env podEnv) (err error) {
	ns, err := servers.NewNetns()
	if err != nil {
		return fmt.Errorf("creating the pod network: %w", err)
	}
	p.ns = ns
	defer func() {
		if err != nil {
			err = errors.Join(err, p.cleanup())
			p.ns, p.relay = nil, nil
		}
	}()
	p.mu.Lock()
	p.state.IP, p.state.HostIP = ns.Addr, ns.Gateway
	p.mu.Unlock()
	spec, err := modelSpec(p.obj, ns.Addr)
	if err != nil {
		return err
	}
	controllerURL := ""
	if env.controller != "" {
		// The sidecar, in the pod's namespace, cannot reach the controller
		// on this namespace's loopback: relay from the pod's gateway.
		l, err := net.Listen("tcp", net.JoinHostPort(ns.Gateway, "0"))
		if err != nil {
			return fmt.Errorf("listening for the controller relay: %w", err)
		}
		p.relay = l
		go relay(l, env.controller)
		controllerURL = "http://" + l.Addr().String()
	}
	dir := filepath.Join(env.dir, p.obj.Namespace+"_"+p.obj.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.done = make(chan struct{})
	go func() {
		defer close(p.done)
		p.supervise(ctx, env, spec, dir, controllerURL)
	}()
	go p.probe(ctx, env.poke)
	return nil
}

func (p *localPod) supervise(ctx context.Context, env podEnv, spec runSpec, dir, controllerURL string) {
	grace := 30 * time.Second
	if g := p.obj.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	backoff := time.Second
	for {
		model, sidecar, err := p.startProcesses(env, spec, dir, controllerURL)
		if err == nil {
			select {
			case <-ctx.Done():
				// The sidecar drains first; the model answers until it is done.
				if err := sidecar.Stop(grace); err != nil {
					p.log.Warn("stopping the sidecar", "err", err)
				}
				if err := model.Stop(grace); err != nil {
					p.log.Warn("stopping the model", "err", err)
				}
				return
			case <-model.Done():
				err = fmt.Errorf("the model exited; log %s", model.LogPath)
			case <-sidecar.Done():
				err = fmt.Errorf("the sidecar exited; log %s", sidecar.LogPath)
			}
			_ = sidecar.Stop(5 * time.Second)
			_ = model.Stop(5 * time.Second)
		}
		p.mu.Lock()
		p.state.Restarts++
		p.setReady(false)
		p.mu.Unlock()
		env.poke()
		p.log.Warn("restarting the pod's processes", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

func (p *localPod) startProcesses(env podEnv, spec runSpec, dir, controllerURL string) (model, sidecar *servers.Process, err error) {
	argv := spec.Argv
	if argv[0] == "nemesis" {
		argv = append([]string{env.nemesis}, argv[1:]...)
	}
	cmd := p.ns.Command(argv[0], argv[1:]...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, spec.Env...)
	cmd.Dir = spec.Dir
	if cmd.Dir == "" {
		cmd.Dir = dir
	}
	model, err = servers.Start("model", filepath.Join(dir, "model.log"), cmd)
	if err != nil {
		return nil, nil, err
	}
	args := []string{"sidecar", "--mode", spec.SidecarMode,
		"--listen", ":" + strconv.Itoa(SidecarPort), "--admin-listen", ":" + strconv.Itoa(AdminPort),
		"--model-url", "http://127.0.0.1:" + strconv.Itoa(int(spec.Port)),
		"--pod-namespace", p.obj.Namespace, "--pod-name", p.obj.Name,
		// The pod's processes share this machine's /proc: meter the model.
		"--meter", "processes", "--meter-pid", strconv.Itoa(model.PID()),
	}
	if spec.HealthPath != "" {
		args = append(args, "--model-health-path", spec.HealthPath)
	}
	if controllerURL != "" {
		args = append(args, "--controller-url", controllerURL)
	}
	cmd = p.ns.Command(env.nemesis, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "NEMESIS_CONTROLLER_TOKEN=" + env.controllerToken}
	cmd.Dir = dir
	sidecar, err = servers.Start("sidecar", filepath.Join(dir, "sidecar.log"), cmd)
	if err != nil {
		_ = model.Stop(5 * time.Second)
		return nil, nil, err
	}
	return model, sidecar, nil
}

// failureThreshold is how many probes in a row must fail before a ready
// pod is not ready, as the kubelet's default.
const failureThreshold = 3

// probe asks the sidecar's /ready, often while the pod is not ready (so a
// model that wakes from zero is routed to at once), seldom once it is.
func (p *localPod) probe(ctx context.Context, poke func()) {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	url := fmt.Sprintf("http://%s/ready", net.JoinHostPort(p.ns.Addr, strconv.Itoa(AdminPort)))
	failures := 0
	for {
		ready := false
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			ready = resp.StatusCode == http.StatusOK
		}
		if ready {
			failures = 0
		} else {
			failures++
		}
		p.mu.Lock()
		// As the kubelet's failureThreshold (3): a ready pod leaves its
		// endpoints after three failed probes in a row, not after one slow
		// answer on a busy machine (which failed requests just released to
		// it). A terminating pod leaves them at once, without the probe.
		changed := false
		if ready || failures >= failureThreshold || !p.state.Ready {
			changed = p.setReady(ready)
		}
		p.mu.Unlock()
		if changed {
			p.log.Info("pod readiness changed", "ready", ready)
			poke()
		}
		wait := 20 * time.Millisecond
		if ready {
			wait = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// setReady records readiness; p.mu is held. A terminating pod is never ready.
func (p *localPod) setReady(ready bool) bool {
	ready = ready && !p.terminating
	if ready == p.state.Ready {
		return false
	}
	p.state.Ready = ready
	p.state.ReadySince = time.Now()
	return true
}

// stop stops the processes (the sidecar drains first) and removes the
// network namespace and relay. Callers at once all wait for the one stop.
func (p *localPod) stop() error {
	p.stopOnce.Do(func() {
		if p.cancel != nil {
			p.cancel()
			<-p.done
		}
		p.stopErr = p.cleanup()
	})
	return p.stopErr
}

func (p *localPod) cleanup() error {
	var errs []error
	if p.relay != nil {
		errs = append(errs, p.relay.Close())
	}
	if p.ns != nil {
		errs = append(errs, p.ns.Delete())
	}
	return errors.Join(errs...)
}

// relay forwards every connection accepted on l to addr until l closes.
func relay(l net.Listener, addr string) {
	for {
		in, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer func() { _ = in.Close() }()
			out, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				return
			}
			defer func() { _ = out.Close() }()
			go func() { _, _ = io.Copy(out, in); _ = out.(*net.TCPConn).CloseWrite() }()
			_, _ = io.Copy(in, out)
		}()
	}
}
