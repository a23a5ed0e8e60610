// Package cluster tests manifests/ on a real single-node Kubernetes cluster
// built on this machine (hack/cluster/cluster.sh): images from make images,
// applied with kubectl as a user would, traffic through Envoy's Service.
package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// node is the cluster TestMain started, or why there is none.
var node struct {
	root       string // the repository
	kubeconfig string
	kubectl    string
	// skip says why no node can run on this machine at all; err why
	// starting one failed.
	skip string
	err  error
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	node.root = root
	node.kubectl = filepath.Join(root, ".tools", "bin", "kubectl")
	logs := filepath.Join(root, ".run", "cluster")
	node.kubeconfig = filepath.Join(logs, "kubeconfig")
	if os.Geteuid() != 0 {
		// The node mounts, makes network namespaces, cgroups and iptables
		// rules: nothing of it works without root.
		node.skip = "a Kubernetes node needs root (mounts, cgroups, iptables, network namespaces)"
		return m.Run()
	}
	if node.err = missingInputs(root); node.err != nil {
		return m.Run()
	}
	script := filepath.Join(root, "hack", "cluster", "cluster.sh")
	start := exec.Command("bash", script, "start")
	start.Env = append(os.Environ(), "NEMESIS_CLUSTER_LOGS="+logs)
	var out bytes.Buffer
	start.Stdout, start.Stderr = &out, &out
	began := time.Now()
	if err := start.Run(); err != nil {
		node.err = fmt.Errorf("starting the node: %w\n%s", err, out.String())
	} else {
		fmt.Fprintf(os.Stderr, "node started in %s\n", time.Since(began).Round(100*time.Millisecond))
	}
	code := m.Run()
	down := exec.Command("bash", script, "down")
	down.Env = start.Env
	if out, err := down.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "taking the node down: %v\n%s", err, out)
		code = 1
	}
	return code
}

// missingInputs names what make tools and make images must build first.
func missingInputs(root string) error {
	var missing []string
	for _, tool := range []string{"kube-apiserver", "kubelet", "kube-proxy", "kubectl", "coredns", "etcd"} {
		if _, err := os.Stat(filepath.Join(root, ".tools", "bin", tool)); err != nil {
			missing = append(missing, ".tools/bin/"+tool+" (make tools)")
		}
	}
	for _, image := range []string{"nemesis", "nemesis-dev", "envoy", "pause", "coredns", "postgres", "redis"} {
		if _, err := os.Stat(filepath.Join(root, "bin", "images", image+".tar")); err != nil {
			missing = append(missing, "bin/images/"+image+".tar (make images)")
		}
	}
	if len(missing) > 0 {
		return errors.New("missing: " + strings.Join(missing, ", "))
	}
	return nil
}

// needNode skips the test where no node can run and fails it where one
// should have started; on failure it prints what the node's components and
// pods said.
func needNode(t *testing.T) {
	t.Helper()
	if node.skip != "" {
		t.Skip(node.skip)
	}
	if node.err != nil {
		t.Fatal(node.err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpNode(t)
		}
	})
}

// kubectl runs kubectl against the node and returns its standard output.
func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := kubectlErr(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func kubectlErr(args ...string) (string, error) {
	cmd := exec.Command(node.kubectl, append([]string{"--kubeconfig", node.kubeconfig}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// dumpNode prints the kubelet's, containerd's and the control plane's logs,
// every pod and its containers' logs.
func dumpNode(t *testing.T) {
	logs, _ := exec.Command("bash", filepath.Join(node.root, "hack", "cluster", "cluster.sh"), "logs").CombinedOutput()
	t.Logf("component logs:\n%s", logs)
	pods, _ := kubectlErr("get", "pods", "-A", "-o", "wide")
	t.Logf("kubectl get pods -A:\n%s", pods)
	events, _ := kubectlErr("get", "events", "-A", "--sort-by=.lastTimestamp")
	t.Logf("events:\n%s", tailLines(events, 60))
	names, _ := kubectlErr("get", "pods", "-A", "-o",
		`jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}{"\n"}{end}`)
	for _, pod := range strings.Fields(names) {
		ns, name, _ := strings.Cut(pod, "/")
		out, _ := kubectlErr("-n", ns, "logs", name, "--all-containers", "--prefix", "--tail=40")
		t.Logf("logs of %s:\n%s", pod, out)
	}
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
