package sidecar

import (
	"testing"

	"github.com/nemesis-ml/nemesis/internal/httpserver"
	"github.com/nemesis-ml/nemesis/internal/openapi"
)

// TestAdminRoutesAreTheOpenAPIOperations fails when a route of the admin
// port is missing from the sidecar's OpenAPI document, or the other way.
func TestAdminRoutesAreTheOpenAPIOperations(t *testing.T) {
	if err := openapi.CheckRoutes(adminRoutes(httpserver.NewRegistry()).Patterns(), openapi.Sidecar()); err != nil {
		t.Error(err)
	}
}
