package tests

import (
	"encoding/xml"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nemesis-ml/nemesis/internal/dev/servers"
	"github.com/nemesis-ml/nemesis/internal/openapi"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

// Bounds of the schemathesis runs: a fixed seed, so that a failure
// reproduces, and a fixed number of examples per operation and phase, so
// that a run takes about as long each time (serve's: 40 s on two cores).
const (
	schemathesisSeed     = "18"
	schemathesisExamples = "100"
)

// TestServeAnswersAsItsOpenAPIDocumentSays runs schemathesis with every
// check against a real serve (PostgreSQL, Redis, kube-apiserver), reading
// the document from serve's own /openapi.json, and fails on any failure or
// on an operation of the document it did not test.
func TestServeAnswersAsItsOpenAPIDocumentSays(t *testing.T) {
	// token also gets the metrics-ingest scope (a token granted twice has
	// the union), so that one header reaches every operation.
	s := newStack(t, "--metrics-token", token)
	// Rows for /proxy/logs: more than a page, so the Link header is there.
	testenv.Exec(t, s.dbURL, `INSERT INTO proxy_logs
		(timestamp, client_ip, target_url, http_method, response_status, latency_ms, environment, route)
		SELECT now() AT TIME ZONE 'UTC' - i * interval '1 second', ('10.0.0.' || i % 250)::inet,
			'http://127.0.0.1:10000/models/demo/' || i, 'POST', 200 + (i % 4) * 100, i, $1, 'demo/demo'
		FROM generate_series(1, 150) AS i`, s.env)
	schemathesis(t, s.apiURL, openapi.Serve(), "schemathesis.toml", "--header", "Authorization: Bearer "+token)
}

// TestSidecarAdminAnswersAsItsOpenAPIDocumentSays does the same for the
// sidecar's admin port, in front of a model that answers.
func TestSidecarAdminAnswersAsItsOpenAPIDocumentSays(t *testing.T) {
	model := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"class":"cat"}`))
	})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = model.Serve(l) }()
	t.Cleanup(func() { _ = model.Close() })
	admin := fmt.Sprintf("127.0.0.1:%d", testenv.Port(t))
	testenv.Process(t, "nemesis-sidecar", exec.Command(nemesisBin, "sidecar", "--admin-listen", admin,
		"--model-url", "http://"+l.Addr().String(), "--pod-namespace", "demo", "--pod-name", "model-0",
		"--meter", "processes", "--meter-pid", strconv.Itoa(os.Getpid())))
	testenv.Eventually(t, 20*time.Second, "sidecar ready", func() error {
		code, _, err := get(http.DefaultClient, "http://"+admin+"/readyz")
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("readyz %d", code)
		}
		return err
	})
	schemathesis(t, "http://"+admin, openapi.Sidecar(), "")
}

// schemathesis validates doc against the OpenAPI 3.1 schema, then runs
// schemathesis on the document that base serves at /openapi.json, with the
// settings of testdata/config (none when empty) and the hooks, and fails
// unless it passes and tested every operation of doc.
func schemathesis(t *testing.T, base string, doc []byte, config string, args ...string) {
	t.Helper()
	tools, err := servers.ToolsDir()
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range []string{"schemathesis", "openapi-spec-validator"} {
		if _, err := os.Stat(filepath.Join(tools, tool)); err != nil {
			t.Fatalf("%v: run `make tools`", err)
		}
	}
	out := testenv.Dir(t, "schemathesis")
	file := filepath.Join(out, "openapi.json")
	if err := os.WriteFile(file, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command(filepath.Join(tools, "openapi-spec-validator"), file).CombinedOutput(); err != nil {
		t.Fatalf("openapi-spec-validator: %v\n%s", err, b)
	}

	testdata, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	junit := filepath.Join(out, "junit.xml")
	// One worker: with two, hypothesis described lambdas by parsing their
	// source in two threads at once and CPython 3.11 failed the run with
	// "AST constructor recursion depth mismatch"; one is as fast here and
	// makes the seed's run the same each time.
	ctx := testenv.Context(t, 10*time.Minute)
	var global []string
	if config != "" {
		global = []string{"--config-file", filepath.Join(testdata, config)}
	}
	cmd := exec.CommandContext(ctx, filepath.Join(tools, "schemathesis"), append(append(global,
		"run", base+"/openapi.json",
		// Every operation: without a filter schemathesis leaves out the
		// one it loaded the document from, GET /openapi.json.
		"--include-path-regex", "^/",
		"--seed", schemathesisSeed, "--max-examples", schemathesisExamples,
		"--workers", "1", "--request-timeout", "30", "--generation-database", "none",
		"--report", "junit", "--report-junit-path", junit, "--no-color"), args...)...)
	// In a folder of its own: schemathesis keeps state in .schemathesis/.
	cmd.Dir = out
	cmd.Env = append(os.Environ(), "SCHEMATHESIS_HOOKS="+filepath.Join(testdata, "schemathesis_hooks.py"), "NO_COLOR=1")
	start := time.Now()
	b, err := cmd.CombinedOutput()
	t.Logf("schemathesis (%s):\n%s", time.Since(start).Round(time.Second), b)
	if err != nil {
		t.Fatalf("schemathesis: %v", err)
	}

	tested := testedOperations(t, junit)
	t.Logf("operations tested: %s", strings.Join(tested, ", "))
	ops, err := openapi.Operations(doc)
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range ops {
		if !slices.Contains(tested, op) {
			t.Errorf("schemathesis did not test %s", op)
		}
	}
}

// testedOperations reads the "METHOD /path" test cases of a JUnit report.
func testedOperations(t *testing.T, path string) []string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var report struct {
		Suites []struct {
			Cases []struct {
				Name string `xml:"name,attr"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(raw, &report); err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	var ops []string
	for _, suite := range report.Suites {
		for _, c := range suite.Cases {
			if strings.Contains(c.Name, " /") {
				ops = append(ops, c.Name)
			}
		}
	}
	slices.Sort(ops)
	return slices.Compact(ops)
}
