package command

import (
	"context"
	"net/http"
	"testing"

	"github.com/nemesis-ml/nemesis/internal/httpserver"
	"github.com/nemesis-ml/nemesis/internal/openapi"
	"github.com/nemesis-ml/nemesis/xds/api"
)

// TestServeRoutesAreTheOpenAPIOperations fails when a route is registered on
// serve's mux without an operation in /openapi.json, or the document names
// an operation serve does not route.
func TestServeRoutesAreTheOpenAPIOperations(t *testing.T) {
	ready := httpserver.Check{Name: "none", Run: func(context.Context) error { return nil }}
	reg := httpserver.NewRegistry()
	settingsAPI, err := api.New(nil, nil, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	mux := Serve{}.routes(reg, ready, settingsAPI, http.NotFoundHandler(), http.NotFoundHandler())
	if err := openapi.CheckRoutes(mux.Patterns(), openapi.Serve()); err != nil {
		t.Error(err)
	}
}
