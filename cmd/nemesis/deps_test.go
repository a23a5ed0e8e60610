package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/nemesis-ml/nemesis/internal/testing/deptest"
)

// The shipped binary carries the product only: no development runtime, no
// demo model, no test harness, no envtest.
func TestShippedBuildCarriesNoDevOrTestCode(t *testing.T) {
	deps := deptest.Deps(t, "github.com/nemesis-ml/nemesis/cmd/nemesis")
	forbidden := func(path string) bool {
		return strings.HasPrefix(path, "github.com/nemesis-ml/nemesis/internal/dev/") ||
			strings.HasPrefix(path, "github.com/nemesis-ml/nemesis/internal/testing/") ||
			strings.HasPrefix(path, "github.com/nemesis-ml/nemesis/cmd/nemesis-dev") ||
			strings.HasPrefix(path, "sigs.k8s.io/controller-runtime/pkg/envtest")
	}
	for dep, by := range deptest.Importers(deps, forbidden) {
		t.Errorf("the shipped build imports %s (from %s)", dep, strings.Join(by, ", "))
	}
	// The standard library's testing package comes in through
	// go-control-plane's logger interface only; nothing of ours imports it.
	importers := deptest.Importers(deps, func(path string) bool { return path == "testing" })["testing"]
	if extra := slices.DeleteFunc(importers, func(p string) bool {
		return p == "github.com/envoyproxy/go-control-plane/pkg/log"
	}); len(extra) > 0 {
		t.Errorf("the shipped build imports testing from %s", strings.Join(extra, ", "))
	}
}
