package identity

import (
	"context"
	"crypto/x509"
	"net/url"
	"testing"
)

func TestFromCertificate(t *testing.T) {
	parse := func(s string) *url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	for name, tc := range map[string]struct {
		uris []*url.URL
		want string // "" when refused
	}{
		"the environment's URI":    {[]*url.URL{URI("production")}, "production"},
		"among other URIs":         {[]*url.URL{parse("https://example.com/x"), URI("staging")}, "staging"},
		"no URI":                   {nil, ""},
		"another trust domain":     {[]*url.URL{parse("spiffe://example.org/environment/production")}, ""},
		"not an environment":       {[]*url.URL{parse("spiffe://nemesis/ns/production/sa/envoy")}, ""},
		"an empty environment":     {[]*url.URL{parse("spiffe://nemesis/environment/")}, ""},
		"a path below environment": {[]*url.URL{parse("spiffe://nemesis/environment/a/b")}, ""},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := FromCertificate(&x509.Certificate{URIs: tc.uris})
			if got != tc.want || (err == nil) != (tc.want != "") {
				t.Fatalf("FromCertificate = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// Without TLS (serve's --insecure-no-auth) the claim is all there is; the
// services' refusals with TLS are tested end to end in tests/.
func TestAuthorizeWithoutTLSTakesTheClaim(t *testing.T) {
	env, err := Authorize(context.Background(), "test", "production")
	if err != nil || env != "production" {
		t.Fatalf("Authorize = %q, %v", env, err)
	}
	if _, ok, err := FromContext(context.Background()); ok || err != nil {
		t.Fatalf("FromContext without a peer = %v, %v; want no identity and no error", ok, err)
	}
}
