package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nemesis-ml/nemesis/internal/identity"
)

func parse(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatal("no PEM")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestGenerateNamesEachEnvironmentAndVerifies(t *testing.T) {
	b, err := Generate([]string{"production", "staging"}, []string{"127.0.0.1", "nemesis.nemesis-system.svc"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(b.Serve.CA)
	for env, p := range b.Envoys {
		c := parse(t, p.Cert)
		if got, err := identity.FromCertificate(c); err != nil || got != env {
			t.Errorf("%s's certificate names %q (%v)", env, got, err)
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s's client certificate does not verify: %v", env, err)
		}
	}
	serve := parse(t, b.Serve.Cert)
	for _, name := range []string{ServerName, "nemesis.nemesis-system.svc", "127.0.0.1"} {
		if _, err := serve.Verify(x509.VerifyOptions{Roots: roots, DNSName: name}); err != nil {
			t.Errorf("serving certificate for %s: %v", name, err)
		}
	}
	if _, err := identity.FromCertificate(serve); err == nil {
		t.Error("the serving certificate names an environment")
	}
}

func TestServerTLSReloadsChangedFilesAndKeepsTheLastGoodPair(t *testing.T) {
	dir := t.TempDir()
	first, err := Generate(nil, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Serve.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	s, err := NewServerTLS(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	served := func() []byte {
		s.mu.Lock()
		s.checked = time.Time{} // look at the files now
		s.mu.Unlock()
		cfg, err := s.Config().GetConfigForClient(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.ClientAuth != tls.RequireAndVerifyClientCert {
			t.Fatal("client certificates are not required")
		}
		return cfg.Certificates[0].Certificate[0]
	}
	if got := served(); string(got) != string(parse(t, first.Serve.Cert).Raw) {
		t.Fatal("not serving the first pair")
	}
	second, err := Generate(nil, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// Half a rotation (the certificate without its key) keeps the old pair.
	if err := os.WriteFile(filepath.Join(dir, CertFile), second.Serve.Cert, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := served(); string(got) != string(parse(t, first.Serve.Cert).Raw) {
		t.Fatal("a certificate without its key replaced the working pair")
	}
	if err := second.Serve.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	if got := served(); string(got) != string(parse(t, second.Serve.Cert).Raw) {
		t.Fatal("the new pair was not taken")
	}
}

func TestNewServerTLSRefusesAFolderWithoutAPair(t *testing.T) {
	if _, err := NewServerTLS(t.TempDir(), slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("an empty folder was accepted")
	}
}
