package api

import (
	"net/http"

	"github.com/nemesis-ml/nemesis/internal/httpauth"
)

// Guarded serves the routes of a mux the API registered itself on, as serve
// exposes them: PUT needs the settings-write scope, every other
// /loadbalancer/ call the read scope.
func Guarded(auth *httpauth.Authorizer, api http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("PUT /loadbalancer/", auth.Require(httpauth.SettingsWrite, api))
	mux.Handle("/loadbalancer/", auth.Require(httpauth.Read, api))
	return mux
}
