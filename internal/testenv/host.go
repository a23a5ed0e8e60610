package testenv

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// Host is a network namespace of the test's own, joined to this one by a
// veth pair, with one address. It stands in for a pod: the API server
// refuses loopback addresses in EndpointSlices, so servers that Envoy must
// reach through an EndpointSlice listen here.
type Host struct {
	// Addr is the host's address, reachable from the test's namespace.
	Addr string
	name string
}

// NewHost creates a host, removed when the test ends. It needs root and
// iproute2.
func NewHost(t testing.TB) *Host {
	t.Helper()
	// Claim a /30 of 10.213.0.0/16 by creating its namespace: names are
	// unique, so parallel test binaries never share a block.
	start := rand.IntN(16384)
	for i := range 16384 {
		block := (start + i) % 16384
		name := fmt.Sprintf("nemesis-%d", block)
		if err := exec.Command("ip", "netns", "add", name).Run(); err != nil {
			continue
		}
		h := &Host{name: name, Addr: fmt.Sprintf("10.213.%d.%d", block/64, block%64*4+2)}
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
		outside, inside := fmt.Sprintf("nmo%d", block), fmt.Sprintf("nmi%d", block)
		gateway := fmt.Sprintf("10.213.%d.%d", block/64, block%64*4+1)
		t.Cleanup(func() { _ = exec.Command("ip", "link", "del", outside).Run() })
		for _, args := range [][]string{
			{"link", "add", outside, "type", "veth", "peer", "name", inside},
			{"link", "set", inside, "netns", name},
			{"addr", "add", gateway + "/30", "dev", outside},
			{"link", "set", outside, "up"},
			{"-n", name, "addr", "add", h.Addr + "/30", "dev", inside},
			{"-n", name, "link", "set", inside, "up"},
			{"-n", name, "link", "set", "lo", "up"},
		} {
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
			}
		}
		return h
	}
	t.Fatal("no free 10.213.0.0/16 block for a test host")
	return nil
}

// Listen opens a TCP listener on a free port of the host's address. The
// socket lives in the host's namespace whatever thread later uses it.
func (h *Host) Listen(t testing.TB) net.Listener {
	t.Helper()
	l, err := h.listen()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func (h *Host) listen() (net.Listener, error) {
	// Namespaces belong to threads: switch this one, open the socket, and
	// switch back before another goroutine can run on it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("reading this thread's namespace: %w", err)
	}
	defer func() { _ = orig.Close() }()
	target, err := netns.GetFromName(h.name)
	if err != nil {
		return nil, fmt.Errorf("opening namespace %s: %w", h.name, err)
	}
	defer func() { _ = target.Close() }()
	if err := netns.Set(target); err != nil {
		return nil, fmt.Errorf("entering namespace %s: %w", h.name, err)
	}
	l, listenErr := net.Listen("tcp", h.Addr+":0")
	if err := netns.Set(orig); err != nil {
		// This thread is stuck in the wrong namespace: let it die with the
		// goroutine rather than be reused (no UnlockOSThread).
		panic(fmt.Sprintf("leaving namespace %s: %v", h.name, err))
	}
	if listenErr != nil {
		return nil, fmt.Errorf("listening in %s: %w", h.name, listenErr)
	}
	return l, nil
}
