// Package pki makes the certificates of the gRPC port: a CA, serve's serving
// pair and one client pair per environment whose URI SAN names it
// (internal/identity), and writes them as Kubernetes TLS Secrets lay them
// out (ca.crt, tls.crt, tls.key).
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/nemesis-ml/nemesis/internal/identity"
)

// File names inside a TLS folder, as in a kubernetes.io/tls Secret.
const (
	CAFile   = "ca.crt"
	CertFile = "tls.crt"
	KeyFile  = "tls.key"
)

// ServerName is the DNS name every serving certificate holds, and the name
// Envoy's bootstrap checks, whatever address it dials.
const ServerName = "nemesis"

// Pair is a certificate and its key, PEM-encoded, with the CA bundle that
// verifies the other side.
type Pair struct {
	CA, Cert, Key []byte
}

// CA signs serving and client certificates.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	PEM  []byte
}

// NewCA makes a self-signed CA valid for validFor.
func NewCA(name string, validFor time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating CA key: %w", err)
	}
	tmpl, err := template(name, validFor)
	if err != nil {
		return nil, err
	}
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("signing CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing CA: %w", err)
	}
	return &CA{cert: cert, key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// Server issues serve's serving pair for the DNS names and IP addresses
// given, plus ServerName.
func (ca *CA) Server(names []string, validFor time.Duration) (Pair, error) {
	tmpl, err := template("nemesis serve", validFor)
	if err != nil {
		return Pair{}, err
	}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	tmpl.DNSNames = []string{ServerName}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if n != ServerName {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	return ca.issue(tmpl)
}

// Client issues the client pair of an environment's Envoys.
func (ca *CA) Client(environment string, validFor time.Duration) (Pair, error) {
	tmpl, err := template("envoy "+environment, validFor)
	if err != nil {
		return Pair{}, err
	}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	tmpl.URIs = append(tmpl.URIs, identity.URI(environment))
	return ca.issue(tmpl)
}

func (ca *CA) issue(tmpl *x509.Certificate) (Pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Pair{}, fmt.Errorf("generating key: %w", err)
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return Pair{}, fmt.Errorf("signing %s: %w", tmpl.Subject.CommonName, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Pair{}, fmt.Errorf("encoding key: %w", err)
	}
	return Pair{
		CA:   ca.PEM,
		Cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Key:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

func template(name string, validFor time.Duration) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generating serial: %w", err)
	}
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name, Organization: []string{"nemesis"}},
		// Clocks of the machines differ a little.
		NotBefore: now.Add(-5 * time.Minute),
		NotAfter:  now.Add(validFor),
	}, nil
}

// WriteDir writes the pair into dir as ca.crt, tls.crt and tls.key, each
// replaced atomically (written aside, then renamed), so a reader never sees
// half a file; the key last, so the pair is whole once it changed.
func (p Pair) WriteDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{{CAFile, p.CA, 0o644}, {CertFile, p.Cert, 0o644}, {KeyFile, p.Key, 0o600}} {
		path := filepath.Join(dir, f.name)
		if err := os.WriteFile(path+".new", f.data, f.mode); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
		if err := os.Rename(path+".new", path); err != nil {
			return fmt.Errorf("replacing %s: %w", path, err)
		}
	}
	return nil
}

// Bundle is everything certgen makes: serve's pair and one client pair per
// environment, all from one CA.
type Bundle struct {
	Serve  Pair
	Envoys map[string]Pair
}

// Generate makes a CA, serve's pair for names and a client pair for each
// environment, all valid for validFor. The CA's key is not kept: rotating
// means generating a new bundle.
func Generate(environments, names []string, validFor time.Duration) (Bundle, error) {
	ca, err := NewCA("nemesis gRPC CA", validFor)
	if err != nil {
		return Bundle{}, err
	}
	b := Bundle{Envoys: map[string]Pair{}}
	if b.Serve, err = ca.Server(names, validFor); err != nil {
		return Bundle{}, err
	}
	for _, env := range environments {
		if b.Envoys[env], err = ca.Client(env, validFor); err != nil {
			return Bundle{}, err
		}
	}
	return b, nil
}

// ServeDir and EnvoyDir are where WriteDirs puts each pair under its root;
// ServeSecret and EnvoySecret name the Secrets certgen writes.
const (
	ServeDir    = "serve"
	ServeSecret = "nemesis-serve-tls"
)

// EnvoyDir is the folder of an environment's client pair under the root.
func EnvoyDir(environment string) string { return "envoy-" + environment }

// EnvoySecret is the Secret of an environment's client pair.
func EnvoySecret(environment string) string { return "nemesis-envoy-" + environment + "-tls" }

// WriteDirs writes every pair under root: ServeDir and EnvoyDir(env).
func (b Bundle) WriteDirs(root string) error {
	if err := b.Serve.WriteDir(filepath.Join(root, ServeDir)); err != nil {
		return err
	}
	for env, p := range b.Envoys {
		if err := p.WriteDir(filepath.Join(root, EnvoyDir(env))); err != nil {
			return err
		}
	}
	return nil
}

// ClientTLS is the TLS of a client of serve's gRPC port with the pair in
// dir (ca.crt, tls.crt, tls.key): serve verified as ServerName by the CA,
// the pair read again at each handshake so a renewed Secret is used on
// the next connection.
func ClientTLS(dir string) (*tls.Config, error) {
	ca, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, fmt.Errorf("reading the CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("no certificate in %s", filepath.Join(dir, CAFile))
	}
	load := func() (*tls.Certificate, error) {
		c, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
		if err != nil {
			return nil, fmt.Errorf("loading the client pair: %w", err)
		}
		return &c, nil
	}
	if _, err := load(); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: ServerName,
		RootCAs:    pool,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return load()
		},
	}, nil
}
