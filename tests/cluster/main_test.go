// Package cluster tests manifests/ on a real single-node Kubernetes cluster
// built on this machine (hack/cluster/cluster.sh): images from make images,
// applied with kubectl as a user would, traffic through Envoy's Service.
package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nemesis-ml/nemesis/internal/testing/node"
)

// theNode is the node TestMain started; startErr says why there is none.
var (
	theNode  *node.Node
	startErr error
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	theNode, startErr = node.Start(root)
	if startErr != nil {
		return m.Run()
	}
	fmt.Fprintf(os.Stderr, "node started in %s\n", theNode.Started.Round(time.Second/10))
	code := m.Run()
	if err := theNode.Down(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	return code
}

// needNode skips the test where no node can run (not root) and fails it
// where one should have started; on failure it prints what the node's
// components and pods said.
func needNode(t *testing.T) {
	t.Helper()
	if errors.Is(startErr, node.ErrNotRoot) {
		t.Skip(startErr)
	}
	if startErr != nil {
		t.Fatal(startErr)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(theNode.Dump())
		}
	})
}

// kubectl runs kubectl against the node and returns its standard output.
func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := theNode.Kubectl(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func kubectlErr(args ...string) (string, error) { return theNode.Kubectl(args...) }
