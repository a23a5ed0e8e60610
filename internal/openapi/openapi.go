// Package openapi holds the OpenAPI 3.1 documents of Nemesis's HTTP APIs,
// serve.json (every API of nemesis serve) and sidecar.json (the sidecar's
// admin port), and serves them.
//
// The documents are written by hand rather than generated from the handlers'
// types: the bounds, patterns and error answers live in validation code that
// no generator reads, so a generated document would be no more true. What
// keeps them true is testing: the routes tests fail when a route is missing
// from its document, and tests/openapi_test.go runs schemathesis against a
// real serve with every check on.
package openapi

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
)

var (
	//go:embed serve.json
	serve []byte
	//go:embed sidecar.json
	sidecar []byte
)

// Serve returns the document of nemesis serve's APIs.
func Serve() []byte { return serve }

// Sidecar returns the document of the sidecar's admin port.
func Sidecar() []byte { return sidecar }

// Handler serves doc as application/json.
func Handler(doc []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
	})
}

var methods = []string{"get", "put", "post", "delete", "patch", "head", "options", "trace"}

// Operations returns doc's operations as ServeMux patterns, "GET /path",
// sorted.
func Operations(doc []byte) ([]string, error) {
	var d struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		return nil, fmt.Errorf("reading the OpenAPI document: %w", err)
	}
	var ops []string
	for path, item := range d.Paths {
		for key := range item {
			if slices.Contains(methods, key) {
				ops = append(ops, strings.ToUpper(key)+" "+path)
			}
		}
	}
	slices.Sort(ops)
	return ops, nil
}

// CheckRoutes reports a mux pattern that is not an operation of doc and an
// operation of doc that no pattern routes. A pattern without a method (a
// subtree) is reported too: the document cannot describe what it routes.
func CheckRoutes(patterns []string, doc []byte) error {
	ops, err := Operations(doc)
	if err != nil {
		return err
	}
	var problems []string
	for _, p := range patterns {
		if !slices.Contains(ops, p) {
			problems = append(problems, fmt.Sprintf("route %q is not an operation of the document", p))
		}
	}
	for _, op := range ops {
		if !slices.Contains(patterns, op) {
			problems = append(problems, fmt.Sprintf("operation %q is not routed", op))
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}
