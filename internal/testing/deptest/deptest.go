// Package deptest fails a test when a package's build pulls in what it must
// not, in the manner of tailscale's tstest/deptest: it reads the import
// graph with `go list -deps`, so what it checks is what the compiler links.
package deptest

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

// Package is one package of a build's import graph.
type Package struct {
	ImportPath string
	Imports    []string
	Standard   bool
}

// Deps returns every package that building pkg compiles, pkg included
// (test files left out).
func Deps(t testing.TB, pkg string) []Package {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-json=ImportPath,Imports,Standard", pkg).Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, exit.Stderr)
		}
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	var deps []Package
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p Package
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			return deps
		} else if err != nil {
			t.Fatalf("reading go list's output: %v", err)
		}
		deps = append(deps, p)
	}
}

// Importers returns, for each package of deps that matches forbidden, the
// packages of deps that import it: the edges to cut.
func Importers(deps []Package, forbidden func(path string) bool) map[string][]string {
	out := map[string][]string{}
	for _, p := range deps {
		for _, imp := range p.Imports {
			if forbidden(imp) {
				out[imp] = append(out[imp], p.ImportPath)
			}
		}
	}
	return out
}
