// Package tests runs whole flows through real Envoy, PostgreSQL, Redis, a
// real Kubernetes API server and the nemesis binary itself.
package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/internal/dev/servers"
	"github.com/nemesis-ml/nemesis/internal/pki"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

var nemesisBin string

func TestMain(m *testing.M) { testenv.RunWithNemesis(m, &nemesisBin) }

// otherEnvironment has a client certificate in every stack, for tests of
// an Envoy that shows another environment's.
const otherEnvironment = "other"

// The tokens of serve's three roles.
const (
	token        = "test-token"
	readToken    = "test-read-token"
	metricsToken = "test-metrics-token"
)

// stack is one environment's Nemesis: PostgreSQL, `nemesis serve`, one
// Envoy, and a namespace on the package's API server.
type stack struct {
	t           *testing.T
	env         string
	namespace   string
	pg          *servers.Postgres
	redis       *servers.Redis
	dbURL       string
	kubeconfig  string
	kube        client.Client
	apiURL      string
	xdsAddr     string
	envoyPort   int
	envoys      []*servers.Envoy
	serve       *servers.Process
	serveListen string
	serveArgs   []string // more flags of nemesis serve
	// tls holds the gRPC port's certificates: serve's pair and one client
	// pair for the stack's environment and for "other".
	tls *testenv.Certs
}

func newStack(t *testing.T, serveArgs ...string) *stack {
	t.Helper()
	s := &stack{t: t, env: "e2e-" + strconv.Itoa(testenv.Port(t))}
	// A spill folder of the test's own: rows left by another never replay here.
	s.serveArgs = append([]string{"--proxy-log-spill-dir", testenv.Dir(t, "spill")}, serveArgs...)
	s.pg, s.dbURL = testenv.Database(t)
	s.redis = testenv.Redis(t)
	s.kube = testenv.KubeClient(t)
	// serve runs as the manifests' service account, so every flow also
	// checks that the generated RBAC role grants what it needs.
	applyManifests(t, s.kube)
	s.kubeconfig = testenv.KubeConfigFileAs(t, serviceAccount)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-"}}
	if err := s.kube.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	s.namespace = ns.Name
	grantLeaderElection(t, s.kube, s.namespace)
	s.tls = testenv.Certificates(t, s.env, otherEnvironment)
	s.serveListen = fmt.Sprintf("127.0.0.1:%d", testenv.Port(t))
	s.apiURL = "http://" + s.serveListen
	s.xdsAddr = fmt.Sprintf("127.0.0.1:%d", testenv.Port(t))
	s.envoyPort = testenv.Port(t)
	s.startServe()
	return s
}

// startServe runs `nemesis serve` and waits until it is ready.
func (s *stack) startServe() {
	s.t.Helper()
	args := append([]string{"serve",
		"--database-url", s.dbURL, "--kubeconfig", s.kubeconfig,
		"--token", token, "--read-token", readToken, "--metrics-token", metricsToken,
		"--tls-dir", filepath.Join(s.tls.Dir, pki.ServeDir),
		"--redis-url", s.redis.URL(), "--leader-election-namespace", s.namespace,
		"--listen", s.serveListen, "--xds-listen", s.xdsAddr,
		"--envoy-listener-port", strconv.Itoa(s.envoyPort), "--log-level", "debug"}, s.serveArgs...)
	cmd := exec.Command(nemesisBin, args...)
	s.serve = testenv.Process(s.t, "nemesis-serve", cmd)
	testenv.Eventually(s.t, 30*time.Second, "nemesis serve ready", func() error {
		resp, err := http.Get(s.apiURL + "/readyz")
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})
}

// startEnvoy starts one more Envoy of the stack's environment on the
// repository's bootstrap and waits until it is LIVE.
func (s *stack) startEnvoy() *servers.Envoy {
	s.t.Helper()
	e := testenv.ProjectEnvoy(s.t, s.xdsAddr, servers.EnvoyConfig{NodeID: fmt.Sprintf("envoy-%d", len(s.envoys)), Cluster: s.env,
		TLSDir: filepath.Join(s.tls.Dir, pki.EnvoyDir(s.env))})
	s.envoys = append(s.envoys, e)
	return e
}

// waitConnected waits until n Envoys of the stack's environment are
// connected to nemesis serve.
func (s *stack) waitConnected(n int) {
	s.t.Helper()
	testenv.Eventually(s.t, 30*time.Second, fmt.Sprintf("%d envoys connected", n), func() error {
		_, body := s.request(http.MethodGet, "/loadbalancer/status", "", readToken)
		var status struct {
			Environments map[string][]json.RawMessage `json:"environments"`
		}
		if err := json.Unmarshal([]byte(body), &status); err != nil {
			return err
		}
		if got := len(status.Environments[s.env]); got != n {
			return fmt.Errorf("%d connected", got)
		}
		return nil
	})
}

// put sends PUT /loadbalancer/settings?wait=ack and returns status and body.
func (s *stack) put(body string) (int, string) {
	s.t.Helper()
	return s.request(http.MethodPut, "/loadbalancer/settings?wait=ack&timeout=20s", body, token)
}

func (s *stack) request(method, path, body, bearer string) (int, string) {
	s.t.Helper()
	req, err := http.NewRequestWithContext(s.t.Context(), method, s.apiURL+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}

// mustPut stores settings and waits for every Envoy to ACK them.
func (s *stack) mustPut(policy string, maxConnections, timeoutSeconds int) {
	s.t.Helper()
	code, body := s.put(fmt.Sprintf(`{"environment":%q,"policy":%q,"max_connections":%d,"timeout_seconds":%d}`,
		s.env, policy, maxConnections, timeoutSeconds))
	if code != http.StatusOK {
		s.t.Fatalf("PUT %s: %d %s", policy, code, body)
	}
}

// clusterConfig returns the dynamic active cluster of the model from one
// Envoy's /config_dump, as JSON.
func (s *stack) clusterConfig(e *servers.Envoy, name string) string {
	s.t.Helper()
	dump, err := e.Admin(s.t.Context(), "/config_dump?resource=dynamic_active_clusters&name_regex="+name)
	if err != nil {
		s.t.Fatal(err)
	}
	return dump
}

// backend is an HTTP server on a test host that answers with its name.
type backend struct {
	name   string
	addr   string
	port   int32
	delay  atomic.Int64 // nanoseconds
	served atomic.Int64
	active atomic.Int64
}

func startBackends(t *testing.T, host *testenv.Host, names ...string) []*backend {
	t.Helper()
	var out []*backend
	for _, name := range names {
		b := &backend{name: name}
		l := host.Listen(t)
		b.addr = l.Addr().String()
		_, port, _ := net.SplitHostPort(b.addr)
		p, _ := strconv.Atoi(port)
		b.port = int32(p)
		srv := &http.Server{Handler: b, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(l) }()
		t.Cleanup(func() { _ = srv.Close() })
		out = append(out, b)
	}
	return out
}

func (b *backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.active.Add(1)
	defer b.active.Add(-1)
	if d := time.Duration(b.delay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	b.served.Add(1)
	_, _ = io.WriteString(w, b.name)
}

// publish creates the Service of the model and one EndpointSlice per
// backend (each backend has its own port), and a CustomAutoscaler routing
// pathPrefix to the Service in the stack's environment.
func (s *stack) publish(service, pathPrefix string, backends []*backend) {
	s.t.Helper()
	s.publishIn(s.namespace, service, pathPrefix, backends)
}

// publishIn is publish in another namespace.
func (s *stack) publishIn(namespace, service, pathPrefix string, backends []*backend) {
	s.t.Helper()
	ctx := s.t.Context()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: service, Namespace: namespace},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 8080}}},
	}
	if err := s.kube.Create(ctx, svc); err != nil {
		s.t.Fatal(err)
	}
	for _, b := range backends {
		s.addSliceIn(namespace, service, b)
	}
	ca := &v1alpha1.CustomAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: service, Namespace: namespace},
		Spec: v1alpha1.CustomAutoscalerSpec{
			ScaleTargetRef: v1alpha1.ScaleTargetReference{APIVersion: "apps/v1", Kind: "Deployment", Name: service},
			MinReplicas:    1, MaxReplicas: 5,
			Route: &v1alpha1.Route{Environment: s.env, PathPrefix: pathPrefix, Service: service, Port: 8080},
			Rules: []v1alpha1.ScalingRule{{ID: "cpu-high", Action: v1alpha1.ActionIncreaseInstances, Thresholds: []v1alpha1.Threshold{
				{MetricType: v1alpha1.MetricCPUUsage, Operator: v1alpha1.OperatorGreaterThan, Value: 700},
			}}},
		},
	}
	if err := s.kube.Create(ctx, ca); err != nil {
		s.t.Fatal(err)
	}
}

func (s *stack) addSlice(service string, b *backend) {
	s.t.Helper()
	s.addSliceIn(s.namespace, service, b)
}

func (s *stack) addSliceIn(namespace, service string, b *backend) {
	s.t.Helper()
	host, _, _ := net.SplitHostPort(b.addr)
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: service + "-" + b.name, Namespace: namespace,
			Labels: map[string]string{discoveryv1.LabelServiceName: service},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{host}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(b.port)}},
	}
	if err := s.kube.Create(s.t.Context(), slice); err != nil {
		s.t.Fatal(err)
	}
}

func (s *stack) removeSlice(service string, b *backend) {
	s.t.Helper()
	slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: service + "-" + b.name, Namespace: s.namespace}}
	if err := s.kube.Delete(s.t.Context(), slice); err != nil {
		s.t.Fatal(err)
	}
}

// waitHosts waits until Envoy's cluster for the model has exactly n hosts.
func (s *stack) waitHosts(e *servers.Envoy, cluster string, n int) {
	s.t.Helper()
	testenv.Eventually(s.t, 20*time.Second, fmt.Sprintf("%d hosts in %s", n, cluster), func() error {
		out, err := e.Admin(s.t.Context(), "/clusters")
		if err != nil {
			return err
		}
		got := 0
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, cluster+"::") && strings.HasSuffix(line, "::health_flags::healthy") {
				got++
			}
		}
		if got != n {
			return fmt.Errorf("%d healthy hosts", got)
		}
		return nil
	})
}

// get sends one request through Envoy and returns status and body.
func get(c *http.Client, url string) (int, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// sequence sends n requests one after another on one connection and returns
// the answering backends in order.
func sequence(t *testing.T, url string, n int) []string {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	out := make([]string, 0, n)
	for range n {
		code, body, err := get(c, url)
		if err != nil || code != http.StatusOK {
			t.Fatalf("GET %s: %d %q %v", url, code, body, err)
		}
		out = append(out, body)
	}
	return out
}

// concurrently sends n requests from workers goroutines and counts the
// answers by status and body.
func concurrently(url string, workers, n int) map[string]int {
	var mu sync.Mutex
	counts := map[string]int{}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			c := &http.Client{Timeout: 30 * time.Second}
			for next.Add(1) <= int64(n) {
				code, body, err := get(c, url)
				key := fmt.Sprintf("%d %s", code, body)
				if err != nil {
					key = "error " + err.Error()
				}
				mu.Lock()
				counts[key]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return counts
}

func decode[T any](t *testing.T, body string) T {
	t.Helper()
	var v T
	if err := json.NewDecoder(bytes.NewReader([]byte(body))).Decode(&v); err != nil {
		t.Fatalf("decoding %q: %v", body, err)
	}
	return v
}

func countOf(seq []string) map[string]int {
	out := map[string]int{}
	for _, s := range seq {
		out[s]++
	}
	return out
}
