package command

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/nemesis-ml/nemesis/console"
	"github.com/nemesis-ml/nemesis/internal/httpauth"
	"github.com/nemesis-ml/nemesis/internal/httpserver"
	"github.com/nemesis-ml/nemesis/internal/openapi"
	"github.com/nemesis-ml/nemesis/xds/api"
)

// TestServeRoutesAreTheOpenAPIOperations fails when a route is registered on
// serve's mux without an operation in /openapi.json, or the document names
// an operation serve does not route. The console's HTML pages under /ui are
// left out: they are a web UI (docs/console.md), not an API; its JSON APIs
// are held to the document like every other route.
func TestServeRoutesAreTheOpenAPIOperations(t *testing.T) {
	ready := httpserver.Check{Name: "none", Run: func(context.Context) error { return nil }}
	reg := httpserver.NewRegistry()
	settingsAPI, err := api.New(nil, nil, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	none := http.NotFoundHandler()
	mux := Serve{}.routes(reg, ready, &httpauth.Authorizer{}, settingsAPI, none, none, none, none)
	ui, err := console.New(console.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ui.Register(mux)
	var apiRoutes []string
	for _, p := range mux.Patterns() {
		if _, path, _ := strings.Cut(p, " "); path == "/ui" || strings.HasPrefix(path, "/ui/") {
			continue
		}
		apiRoutes = append(apiRoutes, p)
	}
	if err := openapi.CheckRoutes(apiRoutes, openapi.Serve()); err != nil {
		t.Error(err)
	}
}
