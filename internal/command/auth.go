package command

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nemesis-ml/nemesis/internal/httpauth"
	"github.com/nemesis-ml/nemesis/internal/pki"
)

// authFlags are the bearer tokens of serve's HTTP APIs, one list per role;
// a list holds more than one token while one is being rotated.
type authFlags struct {
	Token          []string `help:"Bearer tokens of operators: change the load-balancer settings and read everything (settings-write and read scopes). Comma-separated while rotating." env:"NEMESIS_TOKEN"`
	ReadToken      []string `help:"Bearer tokens that read settings, history, status, proxy logs and /metrics, and change nothing (read scope)." env:"NEMESIS_READ_TOKEN"`
	MetricsToken   []string `help:"Bearer tokens of the sidecars: POST /metrics only (metrics-ingest scope)." env:"NEMESIS_METRICS_TOKEN"`
	TLSDir         string   `help:"Folder with the gRPC port's serving pair and the CA of the Envoys' client certificates (ca.crt, tls.crt, tls.key, as nemesis certgen writes them and a mounted Secret holds them); re-read when they change." env:"NEMESIS_TLS_DIR"`
	InsecureNoAuth bool     `help:"Serve every HTTP API without tokens and, without --tls-dir, the gRPC port without TLS. Only for a machine nobody else can reach." env:"NEMESIS_INSECURE_NO_AUTH"`
}

// errNoAuth is serve's refusal to start open by accident.
var errNoAuth = errors.New("serve needs --token (operators) and --metrics-token (sidecars), or NEMESIS_TOKEN and NEMESIS_METRICS_TOKEN; " +
	"--insecure-no-auth runs without authentication, for a machine nobody else can reach")

// errNoTLS is serve's refusal to open the gRPC port to anyone.
var errNoTLS = errors.New("serve needs --tls-dir (NEMESIS_TLS_DIR): the gRPC port's serving pair and the Envoys' CA, " +
	"as `nemesis certgen` writes them; --insecure-no-auth serves it without TLS, for a machine nobody else can reach")

// grpcTLS returns the gRPC port's TLS, nil when it runs without (only with
// --insecure-no-auth).
func (f authFlags) grpcTLS(log *slog.Logger) (*tls.Config, error) {
	if f.TLSDir == "" {
		if !f.InsecureNoAuth {
			return nil, errNoTLS
		}
		log.Warn("--insecure-no-auth without --tls-dir: any client of the gRPC port may act as any environment's Envoy")
		return nil, nil
	}
	s, err := pki.NewServerTLS(f.TLSDir, log.With("component", "tls"))
	if err != nil {
		return nil, err
	}
	return s.Config(), nil
}

func (f authFlags) authorizer(log *slog.Logger) (*httpauth.Authorizer, error) {
	if f.InsecureNoAuth {
		log.Warn("--insecure-no-auth: every HTTP API is open to anyone who reaches it")
		return httpauth.Open(), nil
	}
	if len(f.Token) == 0 || len(f.MetricsToken) == 0 {
		return nil, errNoAuth
	}
	a := &httpauth.Authorizer{}
	for _, g := range []struct {
		flag   string
		tokens []string
		scopes []httpauth.Scope
	}{
		{"--token", f.Token, []httpauth.Scope{httpauth.SettingsWrite, httpauth.Read}},
		{"--read-token", f.ReadToken, []httpauth.Scope{httpauth.Read}},
		{"--metrics-token", f.MetricsToken, []httpauth.Scope{httpauth.MetricsIngest}},
	} {
		if err := a.Grant(g.tokens, g.scopes...); err != nil {
			return nil, fmt.Errorf("%s: %w", g.flag, err)
		}
	}
	return a, nil
}
