// Package identity is who a gRPC client of serve is: the environment its
// client certificate names in a URI SAN (spiffe://nemesis/environment/<env>),
// proven by the TLS handshake, never what it claims in its messages. The
// ADS, access-log and ext_proc services compare what a stream claims with it.
package identity

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

const (
	trustDomain       = "nemesis"
	environmentPrefix = "/environment/"
)

// URI is the URI SAN of an environment's client certificate.
func URI(environment string) *url.URL {
	return &url.URL{Scheme: "spiffe", Host: trustDomain, Path: environmentPrefix + environment}
}

// ErrNoEnvironment says a certificate names no environment.
var ErrNoEnvironment = errors.New("the client certificate names no environment (URI SAN spiffe://nemesis/environment/<env>)")

// FromCertificate returns the environment that c's URI SAN names.
func FromCertificate(c *x509.Certificate) (string, error) {
	for _, u := range c.URIs {
		if u.Scheme == "spiffe" && u.Host == trustDomain && strings.HasPrefix(u.Path, environmentPrefix) {
			if env := strings.TrimPrefix(u.Path, environmentPrefix); env != "" && !strings.Contains(env, "/") {
				return env, nil
			}
		}
	}
	return "", ErrNoEnvironment
}

// FromContext returns the environment of the gRPC stream's peer, from the
// certificate the TLS handshake verified. ok is false on a connection
// without TLS, which serve accepts only with --insecure-no-auth; a TLS peer
// without a verified certificate naming an environment is an error.
func FromContext(ctx context.Context) (environment string, ok bool, err error) {
	p, found := peer.FromContext(ctx)
	if !found {
		return "", false, nil
	}
	info, isTLS := p.AuthInfo.(credentials.TLSInfo)
	if !isTLS {
		return "", false, nil
	}
	if len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return "", true, errors.New("the client presented no verified certificate")
	}
	env, err := FromCertificate(info.State.VerifiedChains[0][0])
	return env, true, err
}

// Authorize returns the environment a stream acts for: the certificate's,
// after checking that claimed (what the stream's messages say; "" when they
// say nothing) agrees with it. Without TLS the claim is all there is. The
// error is a PermissionDenied gRPC status naming both.
func Authorize(ctx context.Context, what, claimed string) (string, error) {
	env, ok, err := FromContext(ctx)
	switch {
	case err != nil:
		return "", status.Errorf(codes.PermissionDenied, "%s: %v", what, err)
	case !ok:
		return claimed, nil
	case claimed != "" && claimed != env:
		return "", status.Errorf(codes.PermissionDenied, "%s: the client certificate is for environment %q, not %q", what, env, claimed)
	}
	return env, nil
}

// Describe names the peer in log lines: its address and certificate subject.
func Describe(ctx context.Context) string {
	p, found := peer.FromContext(ctx)
	if !found {
		return "unknown peer"
	}
	if info, isTLS := p.AuthInfo.(credentials.TLSInfo); isTLS && len(info.State.PeerCertificates) > 0 {
		return fmt.Sprintf("%s (%s)", p.Addr, info.State.PeerCertificates[0].Subject.CommonName)
	}
	return p.Addr.String()
}
