package cluster

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

const (
	// The settings API's token in manifests-dev.
	token = "dev-only-token"
	// A seven, as the demo model reads it (docs/demo-model.md).
	seven = `{"image":["........",".#####..",".....#..","....#...","...#....","...#....","...#....","........"]}`
)

// answered counts the predictions through Envoy that got a 200, for the
// proxy-log check.
var answered atomic.Int64

// TestManifestsOnARealNode applies manifests-dev and its demo (manifests/
// with a development PostgreSQL and Redis, images from make images) with
// kubectl, waits for every Deployment to be Available, then checks through
// the Services, as a client in the cluster's network would: a prediction,
// a settings change ACKed by the Envoys, a wake from zero, the proxy logs,
// a scale-up under load, the loss of a control-plane pod and the way back
// to zero when idle.
func TestManifestsOnARealNode(t *testing.T) {
	needNode(t)
	since := time.Now().UTC()
	if err := theNode.ApplyDev(); err != nil {
		t.Fatal(err)
	}
	t.Logf("kubectl get pods -A:\n%s", kubectl(t, "get", "pods", "-A"))

	t.Run("every pod is ready, non-root on a read-only root filesystem", func(t *testing.T) {
		checkPods(t)
	})

	envoy := "http://" + kubectl(t, "-n", "nemesis-system", "get", "service", "envoy", "-o", "jsonpath={.spec.clusterIP}")
	predictURL := envoy + "/models/digits/predict"
	api := "http://" + kubectl(t, "-n", "nemesis-system", "get", "service", "nemesis", "-o", "jsonpath={.spec.clusterIP}") + ":8080"

	t.Run("a prediction is answered through Envoy's Service", func(t *testing.T) {
		if r := predict(predictURL); r.err != nil || r.code != http.StatusOK || !strings.Contains(r.body, `"digit":7`) {
			t.Fatalf("prediction: %d %q %v", r.code, r.body, r.err)
		}
	})

	t.Run("a settings PUT with wait=ack reaches every Envoy pod", func(t *testing.T) {
		checkSettingsAcked(t, api)
	})

	t.Run("a model at zero wakes on the next request and answers all of 20 at once", func(t *testing.T) {
		before := ackedVersions(t)
		kubectl(t, "-n", "demo", "scale", "deployment/digits", "--replicas=0")
		kubectl(t, "-n", "demo", "wait", "--for=delete", "pod", "-l", "app.kubernetes.io/name=digits", "--timeout=2m")
		// Envoy learns from the emptied EndpointSlice that the route is at
		// zero; its activator then holds what comes.
		waitRouteAtZero(t, before)
		sent := time.Now()
		results := burst(predictURL, 20)
		var held []time.Duration
		for _, r := range results {
			if r.err != nil || r.code != http.StatusOK || !strings.Contains(r.body, `"digit":7`) {
				t.Fatalf("request held at zero: %d %q %v", r.code, r.body, r.err)
			}
			held = append(held, r.took)
		}
		ready := podReadyAt(t)
		slices.Sort(held)
		t.Logf("wake from zero: 20 requests answered, held p50 %s p99 %s; pod ready %s after the first request (whole seconds)",
			held[len(held)/2].Round(time.Millisecond), held[len(held)*99/100].Round(time.Millisecond),
			ready.Sub(sent.Truncate(time.Second)))
	})

	t.Run("every answered request is in /proxy/logs", func(t *testing.T) {
		want := answered.Load()
		testenv.Eventually(t, 30*time.Second, "proxy log rows", func() error {
			rows, err := proxyLogs(api, since, "")
			if err != nil {
				return err
			}
			if got := int64(len(rows)); got != want {
				return fmt.Errorf("%d rows with status 200 for demo/digits, want %d", got, want)
			}
			return nil
		})
	})

	t.Run("load raises replicas and Envoy reaches the new pods", func(t *testing.T) {
		checkScaleUp(t, api, predictURL)
	})

	t.Run("deleting a control-plane pod under traffic fails no request", func(t *testing.T) {
		checkControlPlanePodLoss(t, predictURL)
	})

	t.Run("idle takes the model back to zero", func(t *testing.T) {
		// The demo waits two minutes without requests, with a minute's
		// scale-down stabilization; the test shortens both.
		kubectl(t, "-n", "demo", "patch", "customautoscaler", "digits", "--type=json", "-p",
			`[{"op":"test","path":"/spec/rules/2/id","value":"idle"},{"op":"replace","path":"/spec/rules/2/windowSeconds","value":5},`+
				`{"op":"replace","path":"/spec/scaleToZero/idlePeriodSeconds","value":5},`+
				`{"op":"replace","path":"/spec/behavior/scaleDown/stabilizationWindowSeconds","value":0}]`)
		began := time.Now()
		kubectl(t, "-n", "demo", "wait", "--for=jsonpath={.spec.replicas}=0", "deployment/digits", "--timeout=3m")
		kubectl(t, "-n", "demo", "wait", "--for=delete", "pod", "-l", "app.kubernetes.io/name=digits", "--timeout=2m")
		t.Logf("at zero %s after the idle rule was shortened", time.Since(began).Round(time.Second))
	})
}

// checkPods: every pod Running with every container ready and never
// restarted; every container
// of the project's namespaces with a read-only root filesystem, in a
// namespace whose Pod Security admission enforces "restricted" (non-root,
// no privilege escalation, capabilities dropped).
func checkPods(t *testing.T) {
	out := kubectl(t, "get", "pods", "-A", "-o", `jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name} {.status.phase} {.metadata.ownerReferences[0].kind}{range .status.containerStatuses[*]} {.ready}/{.restartCount}{end}{"\n"}{end}`)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		// A Job's pod (certgen) is done once it has succeeded.
		if len(f) >= 3 && f[1] == "Succeeded" && f[2] == "Job" {
			continue
		}
		// No restart either: the control plane waits for its database
		// however long PostgreSQL takes to create it.
		if len(f) < 4 || f[1] != "Running" || slices.ContainsFunc(f[3:], func(c string) bool { return c != "true/0" }) {
			t.Errorf("pod not running and ready without a restart (ready/restarts): %s", line)
		}
	}
	for _, ns := range []string{"nemesis-system", "demo"} {
		if level := kubectl(t, "get", "namespace", ns, "-o", `jsonpath={.metadata.labels.pod-security\.kubernetes\.io/enforce}`); level != "restricted" {
			t.Errorf("namespace %s enforces %q, want restricted", ns, level)
		}
		out := kubectl(t, "-n", ns, "get", "pods", "-o", `jsonpath={range .items[*]}{range .spec.containers[*]}{.name}={.securityContext.readOnlyRootFilesystem}{"\n"}{end}{end}`)
		for _, line := range strings.Fields(out) {
			if !strings.HasSuffix(line, "=true") {
				t.Errorf("%s: container without a read-only root filesystem: %s", ns, line)
			}
		}
	}
}

// checkSettingsAcked PUTs new settings with ?wait=ack through the Service,
// then asks every control-plane replica which Envoys it serves: each Envoy
// pod is connected to one of them and ACKs the new version.
func checkSettingsAcked(t *testing.T, api string) {
	body := `{"policy":"least_connections","max_connections":100,"timeout_seconds":30}`
	req, _ := http.NewRequest(http.MethodPut, api+"/loadbalancer/settings?wait=ack&timeout=30s", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT: %d %s", resp.StatusCode, raw)
	}
	var put struct {
		Version int `json:"version"`
		AckedBy []struct {
			Node string `json:"node"`
		} `json:"acked_by"`
	}
	if err := json.Unmarshal(raw, &put); err != nil {
		t.Fatalf("PUT answer %s: %v", raw, err)
	}
	envoys := strings.Fields(kubectl(t, "-n", "nemesis-system", "get", "pods", "-l", "app.kubernetes.io/name=envoy",
		"-o", `jsonpath={range .items[*]}{.metadata.name}{"\n"}{end}`))
	// acked_by names only the Envoys connected to the replica that took
	// the PUT, none when every Envoy is on the other one (docs/cluster.md):
	// every replica is asked below.
	for _, a := range put.AckedBy {
		if !slices.Contains(envoys, a.Node) {
			t.Errorf("acked by %q, not an Envoy pod of %v", a.Node, envoys)
		}
	}
	testenv.Eventually(t, 30*time.Second, "every Envoy pod ACKs settings version "+strconv.Itoa(put.Version), func() error {
		acked := ackedVersions(t)
		for _, e := range envoys {
			major, _, _ := strings.Cut(acked[e], ".")
			if v, err := strconv.Atoi(major); err != nil || v < put.Version {
				return fmt.Errorf("envoy %s has not ACKed version %d on any replica (acked: %v)", e, put.Version, acked)
			}
		}
		return nil
	})
	t.Logf("PUT ?wait=ack answered with %d of %d Envoys (those of the replica that took it); all %d ACKed",
		len(put.AckedBy), len(envoys), len(envoys))
}

type envoyState struct {
	Node         string `json:"node"`
	AckedVersion string `json:"acked_version"`
}

// getWithToken GETs url with the operators' token, which reads too.
func getWithToken(url string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	return http.DefaultClient.Do(req)
}

// envoyStatus is GET /loadbalancer/status of one replica: the Envoys
// connected to it in the default environment.
func envoyStatus(replica string) ([]envoyState, error) {
	resp, err := getWithToken(replica + "/loadbalancer/status")
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	var status struct {
		Environments map[string][]envoyState `json:"environments"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&status); err != nil {
		return nil, fmt.Errorf("decoding %s/loadbalancer/status: %w", replica, err)
	}
	return status.Environments["default"], nil
}

// ackedVersions is the last version each Envoy pod ACKed, asked of every
// control-plane replica (each knows the Envoys connected to it).
func ackedVersions(t *testing.T) map[string]string {
	replicas := strings.Fields(kubectl(t, "-n", "nemesis-system", "get", "pods", "-l", "app.kubernetes.io/name=nemesis",
		"-o", `jsonpath={range .items[*]}{.status.podIP}{"\n"}{end}`))
	acked := map[string]string{}
	for _, ip := range replicas {
		status, err := envoyStatus("http://" + ip + ":8080")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range status {
			acked[e.Node] = e.AckedVersion
		}
	}
	return acked
}

// waitRouteAtZero waits until the digits Service has no endpoint left and
// every Envoy has ACKed a configuration newer than before: the one that
// holds the route's requests at the activator.
func waitRouteAtZero(t *testing.T, before map[string]string) {
	testenv.Eventually(t, time.Minute, "digits at zero in every Envoy", func() error {
		out, err := kubectlErr("-n", "demo", "get", "endpointslices", "-l", "kubernetes.io/service-name=digits",
			"-o", `jsonpath={range .items[*]}{range .endpoints[*]}{.addresses[0]}{"\n"}{end}{end}`)
		if err != nil {
			return err
		}
		if strings.TrimSpace(out) != "" {
			return fmt.Errorf("endpoints left: %s", out)
		}
		for node, version := range ackedVersions(t) {
			if version == before[node] {
				return fmt.Errorf("envoy %s still at version %s", node, version)
			}
		}
		return nil
	})
}

// podReadyAt is when the single digits pod last became Ready, to the
// second (the API's resolution).
func podReadyAt(t *testing.T) time.Time {
	out := kubectl(t, "-n", "demo", "get", "pods", "-l", "app.kubernetes.io/name=digits",
		"-o", `jsonpath={.items[0].status.conditions[?(@.type=="Ready")].lastTransitionTime}`)
	ready, err := time.Parse(time.RFC3339, strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("pod ready time %q: %v", out, err)
	}
	return ready
}

// checkScaleUp adds a rule to the demo's CustomAutoscaler that asks for
// more replicas above 20 requests a second per pod (the demo's own "slow"
// rule needs a model slower than this machine runs it), sends predictions
// from 8 clients until a second pod is ready and has answered through
// Envoy: kube-controller-manager's EndpointSlice for it reached Envoy.
// Every request must be answered.
func checkScaleUp(t *testing.T, api, predictURL string) {
	kubectl(t, "-n", "demo", "patch", "customautoscaler", "digits", "--type=json", "-p",
		`[{"op":"add","path":"/spec/rules/-","value":{"id":"busy","action":"INCREASE_INSTANCES","windowSeconds":5,`+
			`"thresholds":[{"metricType":"REQUEST_RATE","operator":"GREATER_THAN","value":20}]}}]`)
	t.Cleanup(func() {
		_, _ = kubectlErr("-n", "demo", "patch", "customautoscaler", "digits", "--type=json", "-p",
			`[{"op":"test","path":"/spec/rules/3/id","value":"busy"},{"op":"remove","path":"/spec/rules/3"}]`)
	})
	before := podIPs(t, "demo", "app.kubernetes.io/name=digits")
	since := time.Now().UTC()
	load := startLoad(predictURL, 8)
	defer func() {
		if n, sent, first := load.stop(); n > 0 {
			t.Errorf("%d of %d requests failed under load, the first: %v", n, sent, first)
		}
	}()
	var added string
	testenv.Eventually(t, 3*time.Minute, "a second digits pod answering through Envoy", func() error {
		for _, ip := range podIPs(t, "demo", "app.kubernetes.io/name=digits") {
			if slices.Contains(before, ip) {
				continue
			}
			rows, err := proxyLogs(api, since, "http://"+ip+":8080/*")
			if err != nil {
				return err
			}
			if len(rows) > 0 {
				added = ip
				return nil
			}
		}
		return fmt.Errorf("no new pod has answered; replicas %s",
			kubectl(t, "-n", "demo", "get", "deployment", "digits", "-o", "jsonpath={.spec.replicas}"))
	})
	t.Logf("new pod %s answered %s after the load began (%d requests so far)", added, time.Since(since).Round(time.Second), load.sent.Load())
}

// podIPs lists the IPs of the ready pods matching selector.
func podIPs(t *testing.T, namespace, selector string) []string {
	return strings.Fields(kubectl(t, "-n", namespace, "get", "pods", "-l", selector, "-o",
		`jsonpath={range .items[?(@.status.podIP)]}{.status.podIP}{"\n"}{end}`))
}

// checkControlPlanePodLoss deletes one control-plane pod while four
// clients send predictions, until its replacement is ready: the data path
// (Envoy with its last configuration) fails nothing.
func checkControlPlanePodLoss(t *testing.T, predictURL string) {
	pods := strings.Fields(kubectl(t, "-n", "nemesis-system", "get", "pods", "-l", "app.kubernetes.io/name=nemesis",
		"-o", `jsonpath={range .items[*]}{.metadata.name}{"\n"}{end}`))
	load := startLoad(predictURL, 4)
	time.Sleep(2 * time.Second)
	kubectl(t, "-n", "nemesis-system", "delete", "pod", pods[0], "--wait=true", "--timeout=2m")
	kubectl(t, "-n", "nemesis-system", "wait", "--for=condition=Available", "deployment/nemesis", "--timeout=3m")
	time.Sleep(3 * time.Second)
	failed, sent, first := load.stop()
	if failed > 0 {
		t.Fatalf("%d of %d requests failed while %s went away, the first: %v", failed, sent, pods[0], first)
	}
	t.Logf("%d requests, none failed, while %s was deleted and replaced", sent, pods[0])
}

// load is predictions sent without pause by a few clients.
type load struct {
	sent, failed atomic.Int64
	first        atomic.Value
	done         chan struct{}
	wg           sync.WaitGroup
}

// startLoad sends predictions to url from clients clients until stop.
func startLoad(url string, clients int) *load {
	l := &load{done: make(chan struct{})}
	for range clients {
		l.wg.Go(func() {
			for {
				select {
				case <-l.done:
					return
				default:
				}
				l.sent.Add(1)
				if r := predict(url); r.err != nil || r.code != http.StatusOK {
					l.failed.Add(1)
					l.first.CompareAndSwap(nil, fmt.Sprintf("%d %q %v", r.code, r.body, r.err))
				}
			}
		})
	}
	return l
}

// stop ends the load and returns how many requests failed, of how many,
// and the first failure.
func (l *load) stop() (failed, sent int64, first any) {
	close(l.done)
	l.wg.Wait()
	return l.failed.Load(), l.sent.Load(), l.first.Load()
}

// proxyLogs reads every row of route demo/digits with status 200 since the
// given time (and, unless empty, whose target_url matches target), following
// the Link header's pages.
func proxyLogs(api string, since time.Time, target string) ([]json.RawMessage, error) {
	q := url.Values{"route": {"demo/digits"}, "status": {"200"}, "since": {since.Format(time.RFC3339Nano)}, "limit": {"1000"}}
	if target != "" {
		q.Set("target_url", target)
		q.Set("limit", "1")
	}
	next := api + "/proxy/logs?" + q.Encode()
	var rows []json.RawMessage
	for next != "" {
		resp, err := getWithToken(next)
		if err != nil {
			return nil, err
		}
		var page []json.RawMessage
		err = json.NewDecoder(resp.Body).Decode(&page)
		_ = resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %d %v", next, resp.StatusCode, err)
		}
		rows = append(rows, page...)
		next = ""
		if target != "" {
			break // one row is enough
		}
		if link := resp.Header.Get("Link"); link != "" {
			if start, end := strings.Index(link, "<"), strings.Index(link, ">"); start >= 0 && end > start {
				next = api + link[start+1:end]
			}
		}
	}
	return rows, nil
}

type result struct {
	code int
	body string
	err  error
	took time.Duration
}

var httpClient = &http.Client{Timeout: 90 * time.Second}

// predict POSTs the seven and counts a 200 in answered.
func predict(u string) result {
	began := time.Now()
	resp, err := httpClient.Post(u, "application/json", strings.NewReader(seven))
	if err != nil {
		return result{err: err, took: time.Since(began)}
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	r := result{code: resp.StatusCode, body: string(body), err: err, took: time.Since(began)}
	if r.err == nil && r.code == http.StatusOK {
		answered.Add(1)
	}
	return r
}

// burst sends n predictions at once.
func burst(u string, n int) []result {
	results := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { results[i] = predict(u) })
	}
	wg.Wait()
	return results
}
