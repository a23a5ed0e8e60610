// Package pushtest is a stand-in for the controller's POST /metrics in
// tests: it decodes the samples sidecars push and records them, and can be
// made to fail or to go away and come back on the same address.
package pushtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nemesis-ml/nemesis/controller/podmetric"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

// Receiver is the stand-in controller.
type Receiver struct {
	t     testing.TB
	token string
	addr  string

	mu      sync.Mutex
	srv     *http.Server
	samples []podmetric.Sample
	posts   int
	status  int // when not 0, answer every POST with it
}

// Start runs a receiver on a free loopback port until the test ends. When
// token is set, POSTs without "Authorization: Bearer <token>" get 401.
func Start(t testing.TB, token string) *Receiver {
	t.Helper()
	r := &Receiver{t: t, token: token, addr: fmt.Sprintf("127.0.0.1:%d", testenv.Port(t))}
	r.Restart()
	t.Cleanup(r.Stop)
	return r
}

// URL is the base URL to give the sidecar as its controller.
func (r *Receiver) URL() string { return "http://" + r.addr }

// Stop closes the receiver: connecting to it is refused until Restart.
func (r *Receiver) Stop() {
	r.mu.Lock()
	srv := r.srv
	r.srv = nil
	r.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// Restart listens again on the same address.
func (r *Receiver) Restart() {
	r.t.Helper()
	var l net.Listener
	var err error
	// The address was ours a moment ago; the kernel may take a moment.
	for deadline := time.Now().Add(5 * time.Second); ; {
		if l, err = net.Listen("tcp", r.addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		r.t.Fatalf("restarting the receiver: %v", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(r.serve), ReadHeaderTimeout: 5 * time.Second}
	r.mu.Lock()
	r.srv = srv
	r.mu.Unlock()
	go func() {
		if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			r.t.Errorf("receiver: %v", err)
		}
	}()
}

// FailWith makes every POST answer status; 0 makes them succeed again.
func (r *Receiver) FailWith(status int) {
	r.mu.Lock()
	r.status = status
	r.mu.Unlock()
}

// Samples returns the samples accepted so far, in arrival order.
func (r *Receiver) Samples() []podmetric.Sample {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.samples)
}

// Posts is how many POSTs arrived, accepted or not.
func (r *Receiver) Posts() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.posts
}

// WaitFor waits until n samples were accepted and returns them.
func (r *Receiver) WaitFor(n int, timeout time.Duration) []podmetric.Sample {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := r.Samples()
		if len(s) >= n {
			return s
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("receiver got %d samples in %v, want %d", len(s), timeout, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost || req.URL.Path != "/metrics" {
		http.Error(w, "want POST /metrics", http.StatusNotFound)
		return
	}
	r.mu.Lock()
	r.posts++
	status := r.status
	r.mu.Unlock()
	if status != 0 {
		http.Error(w, `{"error":"told to fail"}`, status)
		return
	}
	if r.token != "" && req.Header.Get("Authorization") != "Bearer "+r.token {
		http.Error(w, `{"error":"missing or wrong bearer token"}`, http.StatusUnauthorized)
		return
	}
	var batch []podmetric.Sample
	if err := json.NewDecoder(req.Body).Decode(&batch); err != nil {
		http.Error(w, fmt.Sprintf(`{"error":%q}`, err.Error()), http.StatusBadRequest)
		return
	}
	for _, s := range batch {
		if s.ID == "" {
			http.Error(w, `{"error":"id is required","field":"id"}`, http.StatusBadRequest)
			return
		}
	}
	r.mu.Lock()
	r.samples = append(r.samples, batch...)
	r.mu.Unlock()
	w.WriteHeader(http.StatusAccepted)
}
