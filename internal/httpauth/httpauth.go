// Package httpauth checks the bearer tokens of the control plane's HTTP APIs
// by scope: each token is granted scopes, each route requires one. A request
// without a known token gets 401, one whose token lacks the route's scope
// 403; both with a JSON body naming the Authorization header.
package httpauth

import (
	"crypto/subtle"
	"fmt"
	"net/http"
	"strings"

	"github.com/nemesis-ml/nemesis/internal/httpjson"
)

// Scope is what a token may do.
type Scope string

// The scopes of serve's APIs.
const (
	// SettingsWrite allows PUT /loadbalancer/settings.
	SettingsWrite Scope = "settings-write"
	// Read allows reading settings, their history, the Envoys' status,
	// proxy logs and serve's Prometheus /metrics.
	Read Scope = "read"
	// MetricsIngest allows POST /metrics (the sidecars' samples) and
	// nothing else.
	MetricsIngest Scope = "metrics-ingest"
)

type grant struct {
	token  []byte
	scopes []Scope
}

// Authorizer knows the tokens and their scopes. Its zero value knows none
// and refuses every request.
type Authorizer struct {
	grants []grant
	open   bool
}

// Open returns an authorizer that lets every request through: serve's
// --insecure-no-auth.
func Open() *Authorizer { return &Authorizer{open: true} }

// RequiresToken reports whether requests need a token at all (false for
// Open's authorizer).
func (a *Authorizer) RequiresToken() bool { return !a.open }

// Grant gives each token the scopes; a token granted twice has the union.
// Empty tokens are refused, so an unset variable never becomes a valid
// empty bearer.
func (a *Authorizer) Grant(tokens []string, scopes ...Scope) error {
	for i, t := range tokens {
		if strings.TrimSpace(t) == "" {
			return fmt.Errorf("token %d of %v is empty", i, scopes)
		}
		a.grants = append(a.grants, grant{token: []byte(t), scopes: scopes})
	}
	return nil
}

// scopes returns the scopes of the request's bearer token; ok is false when
// it carries none or an unknown one. Every known token is compared, in
// constant time, so the answer's timing says nothing about which matched.
func (a *Authorizer) scopes(r *http.Request) (scopes []Scope, ok bool) {
	raw, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !found || raw == "" {
		return nil, false
	}
	got := []byte(raw)
	for _, g := range a.grants {
		if subtle.ConstantTimeCompare(got, g.token) == 1 {
			scopes, ok = append(scopes, g.scopes...), true
		}
	}
	return scopes, ok
}

// Allowed reports whether r may use scope: 0 when it may, else the status
// to answer (401 or 403).
func (a *Authorizer) Allowed(r *http.Request, scope Scope) int {
	if a.open {
		return 0
	}
	scopes, ok := a.scopes(r)
	if !ok {
		return http.StatusUnauthorized
	}
	for _, s := range scopes {
		if s == scope {
			return 0
		}
	}
	return http.StatusForbidden
}

// Require wraps next so that only requests whose token has scope reach it.
func (a *Authorizer) Require(scope Scope, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch a.Allowed(r, scope) {
		case 0:
			next.ServeHTTP(w, r)
		case http.StatusUnauthorized:
			httpjson.WriteUnauthorized(w)
		default:
			httpjson.WriteError(w, http.StatusForbidden, "Authorization", fmt.Sprintf("this token does not have the %s scope", scope))
		}
	})
}
