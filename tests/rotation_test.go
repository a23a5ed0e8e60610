package tests

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nemesis-ml/nemesis/internal/dev/servers"
	"github.com/nemesis-ml/nemesis/internal/pki"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

// TestCertificateRotationUnderTraffic rotates the gRPC port's CA and pairs
// as docs/security.md says, while clients send requests through Envoy and
// settings change: every side first trusts both CAs, then serve takes the
// new pair from its folder without a restart, then an Envoy with the new
// client pair joins. No request fails and every Envoy ACKs.
func TestCertificateRotationUnderTraffic(t *testing.T) {
	s := newStack(t)
	next := testenv.Certificates(t, s.env)
	serveDir, envoyDir := filepath.Join(s.tls.Dir, pki.ServeDir), filepath.Join(s.tls.Dir, pki.EnvoyDir(s.env))
	nextServe, nextEnvoy := filepath.Join(next.Dir, pki.ServeDir), filepath.Join(next.Dir, pki.EnvoyDir(s.env))

	// 1. Every trust bundle holds the old CA and the new one.
	both := append(readFile(t, filepath.Join(serveDir, pki.CAFile)), readFile(t, filepath.Join(nextServe, pki.CAFile))...)
	for _, dir := range []string{serveDir, envoyDir, nextEnvoy} {
		replaceFile(t, filepath.Join(dir, pki.CAFile), both)
	}
	host := testenv.NewHost(t)
	backends := startBackends(t, host, "a")
	s.publish("demo", "/models/demo", backends)
	envoy := s.startEnvoy()
	s.waitHosts(envoy, s.namespace+"/demo", 1)

	var sent, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		url := fmt.Sprintf("http://127.0.0.1:%d/models/demo", s.envoyPort)
		for {
			select {
			case <-stop:
				return
			default:
			}
			code, body, err := get(http.DefaultClient, url)
			sent.Add(1)
			if err != nil || code != http.StatusOK || body != "a" {
				failed.Add(1)
				t.Logf("request failed: %d %q %v", code, body, err)
			}
		}
	})
	s.mustPut("round_robin", 100, 30)

	// 2. serve's pair from the new CA, replaced in its folder: taken on
	// the next handshake, no restart.
	time.Sleep(1100 * time.Millisecond) // past the last look at the files
	for _, name := range []string{pki.CertFile, pki.KeyFile} {
		replaceFile(t, filepath.Join(serveDir, name), readFile(t, filepath.Join(nextServe, name)))
	}
	time.Sleep(1100 * time.Millisecond)
	if got, want := servingCertificate(t, s.xdsAddr, envoyDir), firstCertificate(t, filepath.Join(nextServe, pki.CertFile)); !bytes.Equal(got, want) {
		t.Fatal("serve still presents the old certificate after its files changed")
	}

	// 3. An Envoy with the new CA's client pair joins.
	e2 := testenv.ProjectEnvoy(t, s.xdsAddr, servers.EnvoyConfig{NodeID: "envoy-rotated", Cluster: s.env, TLSDir: nextEnvoy})
	s.envoys = append(s.envoys, e2)
	s.waitConnected(2)
	s.mustPut("least_connections", 100, 30)
	close(stop)
	wg.Wait()
	if sent.Load() == 0 || failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed during the rotation", failed.Load(), sent.Load())
	}
	log := string(readFile(t, s.serve.LogPath))
	if !strings.Contains(log, "certificates reloaded") {
		t.Fatalf("serve did not say it reloaded its certificates:\n%s", log)
	}
	t.Logf("%d requests during the rotation, none failed", sent.Load())
}

// servingCertificate is the DER of the certificate serve presents to a new
// connection made with the client pair in dir.
func servingCertificate(t *testing.T, addr, dir string) []byte {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, pki.CertFile), filepath.Join(dir, pki.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(readFile(t, filepath.Join(dir, pki.CAFile)))
	conn, err := tls.Dial("tcp", addr, &tls.Config{
		Certificates: []tls.Certificate{pair}, RootCAs: roots, ServerName: pki.ServerName, NextProtos: []string{"h2"},
		MinVersion: tls.VersionTLS12,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	return conn.ConnectionState().PeerCertificates[0].Raw
}

func firstCertificate(t *testing.T, path string) []byte {
	t.Helper()
	block, _ := pem.Decode(readFile(t, path))
	if block == nil {
		t.Fatalf("no PEM in %s", path)
	}
	return block.Bytes
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// replaceFile replaces path atomically, as a Secret's update does.
func replaceFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path+".new", data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}
