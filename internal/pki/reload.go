package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// checkEvery bounds how often the files are looked at: at most once per
// interval, on a handshake.
const checkEvery = time.Second

// ServerTLS serves the pair in a folder (ca.crt, tls.crt, tls.key, as a
// mounted Secret has them) and requires a client certificate signed by
// ca.crt. It re-reads the folder when a file changes, so a rotated Secret
// takes effect on the next handshake without a restart; connections already
// open keep the certificate they were made with.
type ServerTLS struct {
	dir string
	log *slog.Logger

	mu      sync.Mutex
	config  *tls.Config
	stamp   string // the files' sizes and modification times
	checked time.Time
}

// NewServerTLS loads dir, failing when it holds no valid pair and CA.
func NewServerTLS(dir string, log *slog.Logger) (*ServerTLS, error) {
	s := &ServerTLS{dir: dir, log: log}
	stamp, err := s.stampFiles()
	if err != nil {
		return nil, err
	}
	if s.config, err = s.load(); err != nil {
		return nil, err
	}
	s.stamp, s.checked = stamp, time.Now()
	return s, nil
}

// Config is the tls.Config of the gRPC server: every handshake gets the
// current pair and CA.
func (s *ServerTLS) Config() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		NextProtos:         []string{"h2"},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return s.current(), nil },
	}
}

func (s *ServerTLS) current() *tls.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(s.checked) < checkEvery {
		return s.config
	}
	s.checked = time.Now()
	stamp, err := s.stampFiles()
	if err != nil || stamp == s.stamp {
		return s.config
	}
	cfg, err := s.load()
	if err != nil {
		// Half-written (the key not yet replaced) or broken: keep serving
		// the last good pair and look again.
		s.log.Warn("certificates changed but do not load; serving the previous ones", "dir", s.dir, "err", err)
		return s.config
	}
	s.config, s.stamp = cfg, stamp
	s.log.Info("certificates reloaded", "dir", s.dir)
	return s.config
}

func (s *ServerTLS) stampFiles() (string, error) {
	out := ""
	for _, name := range []string{CAFile, CertFile, KeyFile} {
		// Stat follows the symlinks a mounted Secret swaps on update.
		fi, err := os.Stat(filepath.Join(s.dir, name))
		if err != nil {
			return "", fmt.Errorf("reading certificates: %w", err)
		}
		out += fmt.Sprintf("%s:%d:%d;", name, fi.Size(), fi.ModTime().UnixNano())
	}
	return out, nil
}

func (s *ServerTLS) load() (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(filepath.Join(s.dir, CertFile), filepath.Join(s.dir, KeyFile))
	if err != nil {
		return nil, fmt.Errorf("loading the serving pair from %s: %w", s.dir, err)
	}
	caPEM, err := os.ReadFile(filepath.Join(s.dir, CAFile))
	if err != nil {
		return nil, fmt.Errorf("reading the client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no certificate in " + filepath.Join(s.dir, CAFile))
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2"},
		Certificates: []tls.Certificate{pair},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}, nil
}
