package httpserver

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestReadyzNamesTheFailedCheckNotItsError(t *testing.T) {
	failing := Check{Name: "postgres", Run: func(context.Context) error {
		return errors.New("dial tcp db.internal:5432: password authentication failed for user admin")
	}}
	passing := Check{Name: "cache", Run: func(context.Context) error { return nil }}
	mux := Mux(NewRegistry(), passing, failing)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	body := rec.Body.String()
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(body, `"postgres"`) || strings.Contains(body, "cache") {
		t.Fatalf("%d %s: want 503 naming postgres only", rec.Code, body)
	}
	for _, secret := range []string{"db.internal", "admin", "password"} {
		if strings.Contains(body, secret) {
			t.Fatalf("readyz leaks %q: %s", secret, body)
		}
	}
}

func TestGuardedMuxGuardsMetricsOnly(t *testing.T) {
	deny := func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusUnauthorized) })
	}
	mux := GuardedMux(NewRegistry(), deny)
	for path, want := range map[string]int{"/metrics": http.StatusUnauthorized, "/healthz": http.StatusOK, "/readyz": http.StatusOK} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != want {
			t.Errorf("%s: %d, want %d", path, rec.Code, want)
		}
	}
}
