package testenv

import (
	"net"
	"testing"

	"github.com/nemesis-ml/nemesis/internal/dev/servers"
)

// Host is a network namespace of the test's own (servers.Netns), removed when
// the test ends. Servers that Envoy must reach through an EndpointSlice
// listen here, since the API server refuses loopback addresses.
type Host struct {
	// Addr is the host's address, reachable from the test's namespace.
	Addr string
	ns   *servers.Netns
}

// NewHost creates a host, removed when the test ends. It needs root and
// iproute2.
func NewHost(t testing.TB) *Host {
	t.Helper()
	ns, err := servers.NewNetns()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ns.Delete() })
	return &Host{Addr: ns.Addr, ns: ns}
}

// Listen opens a TCP listener on a free port of the host's address.
func (h *Host) Listen(t testing.TB) net.Listener {
	t.Helper()
	l, err := h.ns.Listen(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}
