package servers

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"runtime"
	"strings"

	"github.com/vishvananda/netns"
)

// Netns is a network namespace of its own joined to this one by a veth
// pair, in a /30 of 10.213.0.0/16: Addr inside, Gateway on this side. It
// stands in for a pod's network: the API server refuses loopback addresses
// in EndpointSlices, so servers that Envoy reaches through an EndpointSlice
// listen on Addr.
type Netns struct {
	// Name is the namespace's name for `ip netns`.
	Name string
	// Addr is the address inside, reachable from this namespace.
	Addr string
	// Gateway is this namespace's end of the link, reachable from inside.
	Gateway string
	outside string
}

// NewNetns creates a namespace. It needs root and iproute2; Delete removes it.
func NewNetns() (*Netns, error) {
	// Claim a /30 by creating its namespace: names are unique, so parallel
	// test binaries and `nemesis-dev dev` never share a block.
	const blocks = 16384
	start := rand.IntN(blocks)
	for i := range blocks {
		block := (start + i) % blocks
		name := fmt.Sprintf("nemesis-%d", block)
		if err := exec.Command("ip", "netns", "add", name).Run(); err != nil {
			continue
		}
		base := fmt.Sprintf("10.213.%d.", block/64)
		n := &Netns{
			Name:    name,
			Addr:    base + itoa(block%64*4+2),
			Gateway: base + itoa(block%64*4+1),
			outside: fmt.Sprintf("nmo%d", block),
		}
		inside := fmt.Sprintf("nmi%d", block)
		for _, args := range [][]string{
			{"link", "add", n.outside, "type", "veth", "peer", "name", inside},
			{"link", "set", inside, "netns", name},
			{"addr", "add", n.Gateway + "/30", "dev", n.outside},
			{"link", "set", n.outside, "up"},
			{"-n", name, "addr", "add", n.Addr + "/30", "dev", inside},
			{"-n", name, "link", "set", inside, "up"},
			{"-n", name, "link", "set", "lo", "up"},
		} {
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				err = fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
				return nil, errors.Join(err, n.Delete())
			}
		}
		return n, nil
	}
	return nil, errors.New("no free 10.213.0.0/16 block for a network namespace")
}

// Delete removes the namespace and its link. Processes still inside keep
// the namespace alive, without the link: stop them first.
func (n *Netns) Delete() error {
	var errs []error
	// The veth goes with the namespace too, but only once nothing holds it.
	if out, err := exec.Command("ip", "link", "del", n.outside).CombinedOutput(); err != nil && !strings.Contains(string(out), "Cannot find device") {
		errs = append(errs, fmt.Errorf("deleting link %s: %w: %s", n.outside, err, out))
	}
	if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
		errs = append(errs, fmt.Errorf("deleting namespace %s: %w: %s", n.Name, err, out))
	}
	return errors.Join(errs...)
}

// Command returns a command that runs name with args inside the namespace.
func (n *Netns) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Listen opens a TCP listener on Addr:port (0 for a free port). The socket
// lives in the namespace whatever thread later uses it.
func (n *Netns) Listen(port int) (net.Listener, error) {
	// Namespaces belong to threads: switch this one, open the socket, and
	// switch back before another goroutine can run on it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("reading this thread's namespace: %w", err)
	}
	defer func() { _ = orig.Close() }()
	target, err := netns.GetFromName(n.Name)
	if err != nil {
		return nil, fmt.Errorf("opening namespace %s: %w", n.Name, err)
	}
	defer func() { _ = target.Close() }()
	if err := netns.Set(target); err != nil {
		return nil, fmt.Errorf("entering namespace %s: %w", n.Name, err)
	}
	l, listenErr := net.Listen("tcp", net.JoinHostPort(n.Addr, itoa(port)))
	if err := netns.Set(orig); err != nil {
		// This thread is stuck in the wrong namespace: let it die with the
		// goroutine rather than be reused (no UnlockOSThread).
		panic(fmt.Sprintf("leaving namespace %s: %v", n.Name, err))
	}
	if listenErr != nil {
		return nil, fmt.Errorf("listening in %s: %w", n.Name, listenErr)
	}
	return l, nil
}
