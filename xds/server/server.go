// Package server serves Envoy resources over ADS with go-control-plane, one
// snapshot per environment (Envoy's node cluster), and tracks which version
// each connected Envoy has ACKed or NACKed.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/nemesis-ml/nemesis/internal/identity"

	"github.com/nemesis-ml/nemesis/xds/translate"
)

// Environment names the Envoy fleet of a node: its cluster, or "default".
func Environment(node *corev3.Node) string {
	if node == nil || node.GetCluster() == "" {
		return "default"
	}
	return node.GetCluster()
}

type environmentHash struct{}

func (environmentHash) ID(node *corev3.Node) string { return Environment(node) }

// Nack is Envoy's rejection of a version.
type Nack struct {
	Version string    `json:"version"`
	TypeURL string    `json:"type_url"`
	Message string    `json:"message"`
	At      time.Time `json:"at"`
}

// EnvoyStatus is what one connected Envoy has applied.
type EnvoyStatus struct {
	Node        string    `json:"node"`
	Environment string    `json:"environment"`
	ConnectedAt time.Time `json:"connected_at"`
	// Authenticated says the environment is the one its client
	// certificate names; false only when serve runs without TLS.
	Authenticated bool `json:"authenticated"`
	// AckedVersion is the version that every resource type this Envoy
	// subscribed to has ACKed; empty while they differ.
	AckedVersion string `json:"acked_version"`
	LastNack     *Nack  `json:"last_nack,omitempty"`
	// UnansweredSince is set when the Envoy has left a response neither
	// ACKed nor NACKed for StallAfter or longer: it is stalled, and waits
	// for ACKs leave it out until it answers.
	UnansweredSince *time.Time `json:"unanswered_since,omitempty"`
}

// StallAfter is how long an Envoy may leave a response unanswered before
// waits for ACKs stop counting it. A healthy Envoy answers within
// milliseconds; one that never does (hung, or misbehaving with a valid
// certificate) must not hold back the releases and ?wait=ack of the others.
var StallAfter = 5 * time.Second

type stream struct {
	node        string
	environment string
	// certified is the environment the client certificate names; ""
	// without TLS.
	certified   string
	peer        string
	connectedAt time.Time
	acked       map[string]string       // type URL → version
	sent        map[string]sentResponse // nonce →
	lastNack    *Nack
}

// sentResponse is a response the Envoy has not answered yet.
type sentResponse struct {
	typeURL, version string
	at               time.Time
}

// unackedSince is when the oldest response the Envoy has not answered was
// sent; zero when it answered them all.
func (s *stream) unackedSince() time.Time {
	var oldest time.Time
	for _, r := range s.sent {
		if oldest.IsZero() || r.at.Before(oldest) {
			oldest = r.at
		}
	}
	return oldest
}

// answered forgets the response nonce and the older ones of its type: Envoy
// answers only the latest response of a type it received.
func (s *stream) answered(typeURL, nonce string) {
	r, ok := s.sent[nonce]
	if !ok {
		return
	}
	for n, o := range s.sent {
		if o.typeURL == typeURL && !o.at.After(r.at) {
			delete(s.sent, n)
		}
	}
}

func (s *stream) status() EnvoyStatus {
	st := EnvoyStatus{Node: s.node, Environment: s.environment, ConnectedAt: s.connectedAt, LastNack: s.lastNack,
		Authenticated: s.certified != ""}
	if since := s.unackedSince(); !since.IsZero() && time.Since(since) >= StallAfter {
		st.UnansweredSince = &since
	}
	first := true
	for _, v := range s.acked {
		// A type that has ACKed nothing yet ("") holds the others back too,
		// whichever order the map yields them in.
		if !first && v != st.AckedVersion {
			st.AckedVersion = ""
			break
		}
		st.AckedVersion, first = v, false
	}
	return st
}

// Server is the ADS server.
type Server struct {
	log   *slog.Logger
	cache cachev3.SnapshotCache
	// newEnvironment is called when an Envoy of an environment without a
	// snapshot connects, so one can be built for it.
	newEnvironment func(environment string)

	metrics *metrics

	mu      sync.Mutex
	streams map[int64]*stream
	changed chan struct{} // closed and replaced on every ACK, NACK or disconnect
	// versions are the environments' current snapshot versions.
	versions map[string]string
}

// New returns a server; newEnvironment is called (without locks held) for
// each environment that an Envoy asks for before it has a snapshot.
func New(log *slog.Logger, newEnvironment func(environment string)) *Server {
	return &Server{
		log:            log,
		cache:          cachev3.NewSnapshotCache(true, environmentHash{}, nil),
		newEnvironment: newEnvironment,
		metrics:        newMetrics(),
		streams:        map[int64]*stream{},
		changed:        make(chan struct{}),
		versions:       map[string]string{},
	}
}

// SetSnapshot replaces an environment's resources; every Envoy of it
// receives them.
func (s *Server) SetSnapshot(ctx context.Context, environment, version string, res translate.Resources) error {
	snap, err := cachev3.NewSnapshot(version, res)
	if err != nil {
		return fmt.Errorf("building snapshot %s of %q: %w", version, environment, err)
	}
	if err := snap.Consistent(); err != nil {
		return fmt.Errorf("snapshot %s of %q is inconsistent: %w", version, environment, err)
	}
	if err := s.cache.SetSnapshot(ctx, environment, snap); err != nil {
		return fmt.Errorf("setting snapshot %s of %q: %w", version, environment, err)
	}
	s.mu.Lock()
	s.versions[environment] = version
	s.mu.Unlock()
	s.metrics.snapshots.WithLabelValues(environment).Inc()
	// At zero from the first snapshot on, so that rate() sees the first.
	s.metrics.acks.WithLabelValues(environment)
	s.metrics.nacks.WithLabelValues(environment)
	return nil
}

// HasSnapshot reports whether the environment has resources.
func (s *Server) HasSnapshot(environment string) bool {
	_, err := s.cache.GetSnapshot(environment)
	return err == nil
}

// Status lists the connected Envoys, by environment and node.
func (s *Server) Status() []EnvoyStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]EnvoyStatus, 0, len(s.streams))
	for _, st := range s.streams {
		out = append(out, st.status())
	}
	slices.SortFunc(out, func(a, b EnvoyStatus) int {
		return strings.Compare(a.Environment+"/"+a.Node, b.Environment+"/"+b.Node)
	})
	return out
}

// NackError says that an Envoy rejected a version.
type NackError struct {
	Node string
	Nack Nack
}

func (e *NackError) Error() string {
	return fmt.Sprintf("envoy %s rejected version %s: %s", e.Node, e.Nack.Version, e.Nack.Message)
}

// WaitAcked waits until every Envoy of the environment connected at the time
// has ACKed a version that reached(version) accepts, and returns their status.
// It fails with *NackError when one of them rejects such a version. An Envoy
// that has left a response unanswered for StallAfter is not waited for (and
// shows as stalled in Status): the rule is that every Envoy that answers
// must have ACKed.
func (s *Server) WaitAcked(ctx context.Context, environment string, reached func(version string) bool) ([]EnvoyStatus, error) {
	for {
		s.mu.Lock()
		var pending, done []EnvoyStatus
		var nextStall time.Time // when the next pending Envoy counts as stalled
		for _, st := range s.streams {
			if st.environment != environment {
				continue
			}
			if st.lastNack != nil && reached(st.lastNack.Version) {
				s.mu.Unlock()
				return nil, &NackError{Node: st.node, Nack: *st.lastNack}
			}
			status := st.status()
			switch {
			case status.AckedVersion != "" && reached(status.AckedVersion):
				done = append(done, status)
			case status.UnansweredSince != nil:
				// Stalled: not waited for.
			default:
				pending = append(pending, status)
				if since := st.unackedSince(); !since.IsZero() && (nextStall.IsZero() || since.Add(StallAfter).Before(nextStall)) {
					nextStall = since.Add(StallAfter)
				}
			}
		}
		changed := s.changed
		s.mu.Unlock()
		if len(pending) == 0 {
			return done, nil
		}
		// Wake up when the next pending Envoy turns stalled, too.
		timer := time.NewTimer(time.Hour)
		if !nextStall.IsZero() {
			timer.Reset(time.Until(nextStall))
		}
		select {
		case <-ctx.Done():
			timer.Stop()
			return pending, fmt.Errorf("waiting for %d envoys of %q: %w", len(pending), environment, ctx.Err())
		case <-changed:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// notifyLocked wakes the waiters; s.mu must be held.
func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Serve runs the gRPC ADS server on l, without TLS, until ctx ends.
// register adds other services to the same gRPC server, reached through the
// cluster Envoy's bootstrap already has for xDS.
func (s *Server) Serve(ctx context.Context, l net.Listener, register ...func(*grpc.Server)) error {
	return s.serve(ctx, l, nil, register)
}

// ServeTLS is Serve with TLS: cfg requires and verifies client
// certificates, and every stream acts for the environment its certificate
// names (internal/identity). A node whose cluster differs is refused with
// PermissionDenied.
func (s *Server) ServeTLS(ctx context.Context, l net.Listener, cfg *tls.Config, register ...func(*grpc.Server)) error {
	return s.serve(ctx, l, []grpc.ServerOption{grpc.Creds(credentials.NewTLS(cfg))}, register)
}

func (s *Server) serve(ctx context.Context, l net.Listener, opts []grpc.ServerOption, register []func(*grpc.Server)) error {
	xds := serverv3.NewServer(ctx, s.cache, serverv3.CallbackFuncs{
		StreamOpenFunc:     s.onStreamOpen,
		StreamClosedFunc:   s.onStreamClosed,
		StreamRequestFunc:  s.onStreamRequest,
		StreamResponseFunc: s.onStreamResponse,
	})
	grpcServer := grpc.NewServer(append(opts,
		// Envoy pings every 10 s (envoy/bootstrap.yaml); allow it.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	)...)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(grpcServer, xds)
	for _, r := range register {
		r(grpcServer)
	}
	errc := make(chan error, 1)
	go func() { errc <- grpcServer.Serve(l) }()
	s.log.Info("xds server listening", "addr", l.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("serving xds: %w", err)
	case <-ctx.Done():
	}
	// Envoy keeps its last configuration and reconnects: no need to drain.
	grpcServer.Stop()
	if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serving xds: %w", err)
	}
	return nil
}

func (s *Server) onStreamOpen(ctx context.Context, id int64, _ string) error {
	certified, _, err := identity.FromContext(ctx)
	if err != nil {
		s.log.Warn("envoy refused: no environment in its certificate", "peer", identity.Describe(ctx), "err", err)
		return status.Errorf(codes.PermissionDenied, "xds: %v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.streams[id] = &stream{connectedAt: time.Now(), certified: certified, peer: identity.Describe(ctx),
		acked: map[string]string{}, sent: map[string]sentResponse{}}
	return nil
}

func (s *Server) onStreamClosed(id int64, _ *corev3.Node) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.streams[id]; st != nil && st.node != "" {
		s.log.Info("envoy disconnected", "node", st.node, "environment", st.environment)
	}
	delete(s.streams, id)
	s.notifyLocked()
}

func (s *Server) onStreamRequest(id int64, req *discoveryv3.DiscoveryRequest) error {
	s.mu.Lock()
	st := s.streams[id]
	if st == nil {
		s.mu.Unlock()
		return fmt.Errorf("request on unknown stream %d", id)
	}
	first := st.node == "" && req.GetNode() != nil
	if first {
		// Envoy sends its node on the first request only.
		node, env := req.GetNode().GetId(), Environment(req.GetNode())
		if st.certified != "" && env != st.certified {
			s.mu.Unlock()
			s.log.Warn("envoy refused: its node cluster is not the environment of its certificate",
				"node", node, "cluster", env, "certificate_environment", st.certified, "peer", st.peer)
			return status.Errorf(codes.PermissionDenied,
				"node cluster %q is not the environment %q of the client certificate", env, st.certified)
		}
		st.node, st.environment = node, env
		s.log.Info("envoy connected", "node", st.node, "environment", st.environment, "authenticated", st.certified != "")
	}
	switch {
	case req.GetErrorDetail() != nil:
		st.lastNack = &Nack{
			Version: st.sent[req.GetResponseNonce()].version,
			TypeURL: req.GetTypeUrl(),
			Message: req.GetErrorDetail().GetMessage(),
			At:      time.Now(),
		}
		s.log.Warn("envoy rejected configuration", "node", st.node, "environment", st.environment,
			"version", st.lastNack.Version, "type", req.GetTypeUrl(), "err", st.lastNack.Message)
		s.metrics.nacks.WithLabelValues(st.environment).Inc()
	default:
		if req.GetResponseNonce() != "" {
			s.metrics.acks.WithLabelValues(st.environment).Inc()
		}
		// An ACK, or a subscription carrying the version Envoy already has
		// ("" when it has none): either way, what this type now runs.
		st.acked[req.GetTypeUrl()] = req.GetVersionInfo()
	}
	st.answered(req.GetTypeUrl(), req.GetResponseNonce())
	environment := st.environment
	s.notifyLocked()
	s.mu.Unlock()

	if first && !s.HasSnapshot(environment) {
		s.newEnvironment(environment)
	}
	return nil
}

func (s *Server) onStreamResponse(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.streams[id]; st != nil {
		st.sent[resp.GetNonce()] = sentResponse{typeURL: resp.GetTypeUrl(), version: resp.GetVersionInfo(), at: time.Now()}
		// Waiters time the Envoy's answer from now.
		s.notifyLocked()
	}
}
