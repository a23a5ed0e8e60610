package tests

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nemesis-ml/nemesis/internal/database"
	"github.com/nemesis-ml/nemesis/internal/dev/servers"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
	"github.com/nemesis-ml/nemesis/xds"
	"github.com/nemesis-ml/nemesis/xds/ir"
	"github.com/nemesis-ml/nemesis/xds/settingsdb"
	"github.com/nemesis-ml/nemesis/xds/translate"
)

// TestANewModelsClusterArrivesWhileAnotherWarms: a cluster changed twice in
// quick succession (added, then given its Service's protocol) makes Envoy
// warm it again after it already has that version's endpoints, and Envoy
// holds back its cluster requests while a cluster warms; go-control-plane's
// ADS mode answers endpoint requests only when they name every cluster, so
// a model added then cannot reach Envoy: its route points at an unknown
// cluster (503, no body). Clusters warm for 2 s at most (Envoy's default is
// 15 s): the new model's cluster is there soon after, and every cluster
// keeps its endpoints. Seen as the three MLServer models of the protocol
// test failing together when released from zero.
func TestANewModelsClusterArrivesWhileAnotherWarms(t *testing.T) {
	ctx := testenv.Context(t, 2*time.Minute)
	cp, addr := startControlPlane(ctx, t, testenv.Port(t))
	const env = "warming"
	ep := []ir.Endpoint{{Address: "127.0.0.1", Port: 9}}
	a := ir.Route{Name: "ml/a", PathPrefix: "/a", Endpoints: ep}
	cp.RoutesChanged(ctx, map[string][]ir.Route{env: {a}})
	e := testenv.ProjectEnvoy(t, addr, servers.EnvoyConfig{NodeID: "envoy-0", Cluster: env})
	active := func(cluster string) error {
		out, err := e.Admin(ctx, "/clusters")
		if err != nil {
			return err
		}
		if !strings.Contains(out, cluster+"::") {
			return fmt.Errorf("cluster %s not active", cluster)
		}
		return nil
	}
	testenv.Eventually(t, 10*time.Second, "cluster ml/a active", func() error { return active("ml/a") })

	routes := []ir.Route{a}
	for round := range 5 {
		// A model is added and changes at once (its Service's protocol
		// found a moment later), then another arrives.
		b := ir.Route{Name: fmt.Sprintf("ml/b%d", round), PathPrefix: fmt.Sprintf("/b%d", round), Endpoints: ep}
		cp.RoutesChanged(ctx, map[string][]ir.Route{env: append(routes, b)})
		b.Protocol = ir.H2C
		routes = append(routes, b)
		cp.RoutesChanged(ctx, map[string][]ir.Route{env: routes})
		time.Sleep(100 * time.Millisecond)
		c := ir.Route{Name: fmt.Sprintf("ml/c%d", round), PathPrefix: fmt.Sprintf("/c%d", round), Endpoints: ep}
		routes = append(routes, c)
		cp.RoutesChanged(ctx, map[string][]ir.Route{env: routes})
		start := time.Now()
		testenv.Eventually(t, 5*time.Second, "the new model's cluster active", func() error { return active(c.Name) })
		for _, r := range routes {
			if err := active(r.Name + "::127.0.0.1:9"); err != nil {
				t.Fatalf("round %d: %s lost its endpoint: %v", round, r.Name, err)
			}
		}
		t.Logf("round %d: %s active %v after its snapshot", round, c.Name, time.Since(start).Round(time.Millisecond))
	}
}

// TestARouteWithoutItsServiceHasNoClusterYet: a route whose Service is not
// known yet answers 503 and gives Envoy no cluster (which would change when
// the Service's protocol comes, and warm again); once the Service is seen
// the cluster comes and the route reaches its backend.
func TestARouteWithoutItsServiceHasNoClusterYet(t *testing.T) {
	ctx := testenv.Context(t, 2*time.Minute)
	port := testenv.Port(t)
	cp, addr := startControlPlane(ctx, t, port)
	const env = "noservice"
	route := ir.Route{Name: "ml/a", PathPrefix: "/a", Endpoints: []ir.Endpoint{}, NoService: true}
	cp.RoutesChanged(ctx, map[string][]ir.Route{env: {route}})
	e := testenv.ProjectEnvoy(t, addr, servers.EnvoyConfig{NodeID: "envoy-0", Cluster: env})
	testenv.Eventually(t, 10*time.Second, "the route answers 503, no cluster", func() error {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/a", port))
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			return fmt.Errorf("GET /a: %d", resp.StatusCode)
		}
		return nil
	})
	clusters, err := e.Admin(ctx, "/clusters")
	if err != nil || strings.Contains(clusters, "ml/a::") {
		t.Fatalf("a cluster for a route without its Service: %v\n%s", err, clusters)
	}

	backend := startBackends(t, testenv.NewHost(t), "a")[0]
	route.NoService, route.Protocol = false, ir.HTTP1
	route.Endpoints = []ir.Endpoint{{Address: strings.Split(backend.addr, ":")[0], Port: uint32(backend.port)}}
	cp.RoutesChanged(ctx, map[string][]ir.Route{env: {route}})
	testenv.Eventually(t, 10*time.Second, "the route reaches its backend", func() error {
		code, body, err := get(http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/a", port))
		if err != nil || code != http.StatusOK || body != "a" {
			return fmt.Errorf("GET /a: %d %q %v", code, body, err)
		}
		return nil
	})
}

// startControlPlane serves xDS in this process (plaintext) for Envoys
// whose listener is on port, until ctx ends; it returns the control plane
// and its address.
func startControlPlane(ctx context.Context, t *testing.T, port int) (*xds.ControlPlane, string) {
	t.Helper()
	_, url := testenv.Database(t)
	pool, err := database.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	cp := xds.New(slog.New(slog.DiscardHandler), settingsdb.NewStore(pool), translate.Options{ListenerAddress: "127.0.0.1", ListenerPort: uint32(port)})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = cp.Server.Serve(ctx, l) }()
	return cp, l.Addr().String()
}
