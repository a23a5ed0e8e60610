// Package node starts and removes the single-node Kubernetes cluster of
// hack/cluster/cluster.sh for tests and benchmarks, and talks to it through
// the kubectl that make tools builds.
package node

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Node is a running node.
type Node struct {
	Root       string // the repository
	Kubeconfig string
	kubectl    string
	env        []string
	// Started is how long cluster.sh start took.
	Started time.Duration
}

// ErrNotRoot says why no node can run: it mounts, makes cgroups, network
// namespaces and iptables rules.
var ErrNotRoot = errors.New("a Kubernetes node needs root (mounts, cgroups, iptables, network namespaces)")

// Start starts the node of the repository at root, with the images of make
// images, waiting for the machine's node lock if another holds it.
func Start(root string) (*Node, error) {
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	if err := missingInputs(root); err != nil {
		return nil, err
	}
	logs := filepath.Join(root, ".run", "cluster")
	n := &Node{
		Root:       root,
		Kubeconfig: filepath.Join(logs, "kubeconfig"),
		kubectl:    filepath.Join(root, ".tools", "bin", "kubectl"),
		env:        append(os.Environ(), "NEMESIS_CLUSTER_LOGS="+logs),
	}
	began := time.Now()
	if out, err := n.script("start"); err != nil {
		return nil, fmt.Errorf("starting the node: %w\n%s", err, out)
	}
	n.Started = time.Since(began)
	return n, nil
}

// Down removes the node and what it changed on the machine.
func (n *Node) Down() error {
	if out, err := n.script("down"); err != nil {
		return fmt.Errorf("taking the node down: %w\n%s", err, out)
	}
	return nil
}

func (n *Node) script(command string) ([]byte, error) {
	cmd := exec.Command("bash", filepath.Join(n.Root, "hack", "cluster", "cluster.sh"), command)
	cmd.Env = n.env
	return cmd.CombinedOutput()
}

// missingInputs names what make tools and make images must build first.
func missingInputs(root string) error {
	var missing []string
	for _, tool := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
		"kubelet", "kube-proxy", "kubectl", "coredns"} {
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

// Kubectl runs kubectl against the node and returns its standard output.
func (n *Node) Kubectl(args ...string) (string, error) {
	cmd := exec.Command(n.kubectl, append([]string{"--kubeconfig", n.Kubeconfig}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// Dump is what to read when a test on the node failed: the tails of the
// kubelet's, containerd's and the control plane's logs, every pod, the
// latest events and every pod's containers' logs.
func (n *Node) Dump() string {
	var b strings.Builder
	logs, _ := n.script("logs")
	fmt.Fprintf(&b, "component logs:\n%s\n", logs)
	pods, _ := n.Kubectl("get", "pods", "-A", "-o", "wide")
	fmt.Fprintf(&b, "kubectl get pods -A:\n%s\n", pods)
	events, _ := n.Kubectl("get", "events", "-A", "--sort-by=.lastTimestamp")
	fmt.Fprintf(&b, "events:\n%s\n", tailLines(events, 60))
	names, _ := n.Kubectl("get", "pods", "-A", "-o",
		`jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}{"\n"}{end}`)
	for _, pod := range strings.Fields(names) {
		ns, name, _ := strings.Cut(pod, "/")
		out, _ := n.Kubectl("-n", ns, "logs", name, "--all-containers", "--prefix", "--tail=40")
		fmt.Fprintf(&b, "logs of %s:\n%s\n", pod, out)
	}
	return b.String()
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ApplyDev applies manifests-dev and its demo with the images of make images
// (tests/cluster/testdata) and waits until every Deployment is Available.
func (n *Node) ApplyDev() error {
	testdata := filepath.Join(n.Root, "tests", "cluster", "testdata")
	if _, err := n.Kubectl("apply", "-k", filepath.Join(testdata, "dev")); err != nil {
		return err
	}
	if _, err := n.Kubectl("-n", "nemesis-system", "wait", "--for=condition=Available", "deployment", "--all", "--timeout=5m"); err != nil {
		return err
	}
	// The CustomAutoscaler's CRD came with manifests-dev; discovery may
	// take a moment to serve it.
	var err error
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
		if _, err = n.Kubectl("apply", "-k", filepath.Join(testdata, "demo")); err == nil {
			break
		}
	}
	if err != nil {
		return err
	}
	_, err = n.Kubectl("-n", "demo", "wait", "--for=condition=Available", "deployment/digits", "--timeout=3m")
	return err
}
