// Package xds keeps every environment's Envoy configuration current: it
// joins the settings from PostgreSQL with the routes from Kubernetes,
// translates them, and hands the snapshots to the ADS server.
package xds

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nemesis-ml/nemesis/xds/ir"
	"github.com/nemesis-ml/nemesis/xds/server"
	"github.com/nemesis-ml/nemesis/xds/settings"
	"github.com/nemesis-ml/nemesis/xds/translate"
)

// ControlPlane holds the inputs of every environment and rebuilds an
// environment's snapshot whenever one of its inputs changes.
type ControlPlane struct {
	log    *slog.Logger
	store  SettingsReader
	opts   translate.Options
	Server *server.Server

	mu       sync.Mutex
	settings map[string]settings.Settings
	routes   map[string][]ir.Route
	served   map[string]bool // environments with a snapshot
	seq      uint64
	// ready is, per environment, the routes with endpoints in its latest
	// snapshot and that snapshot's sequence number; published is closed
	// and replaced on every publication.
	ready     map[string]readyRoutes
	published chan struct{}
}

type readyRoutes struct {
	seq    uint64
	routes map[string]bool
}

// SettingsReader reads the stored settings; xds/settingsdb.Store is the
// production one.
type SettingsReader interface {
	// Current returns the environment's newest settings, or its defaults.
	Current(ctx context.Context, environment string) (settings.Settings, error)
	// All returns every configured environment's newest settings.
	All(ctx context.Context) (map[string]settings.Settings, error)
}

// New returns a control plane reading settings from store.
func New(log *slog.Logger, store SettingsReader, opts translate.Options) *ControlPlane {
	c := &ControlPlane{
		log:       log,
		store:     store,
		opts:      opts,
		settings:  map[string]settings.Settings{},
		routes:    map[string][]ir.Route{},
		served:    map[string]bool{},
		ready:     map[string]readyRoutes{},
		published: make(chan struct{}),
	}
	c.Server = server.New(log, c.ensure)
	return c
}

// Version returns the settings version a snapshot version was built from.
func Version(snapshotVersion string) int64 {
	v, _ := strconv.ParseInt(strings.SplitN(snapshotVersion, ".", 2)[0], 10, 64)
	return v
}

// sequence returns the publication sequence number of a snapshot version.
func sequence(snapshotVersion string) uint64 {
	_, seq, _ := strings.Cut(snapshotVersion, ".")
	n, _ := strconv.ParseUint(seq, 10, 64)
	return n
}

// WaitReady waits until every Envoy of the environment has ACKed a snapshot
// in which the route has a ready endpoint, so that a request Envoy sends to
// it now finds one. It fails with *server.NackError when an Envoy rejects
// that snapshot.
func (c *ControlPlane) WaitReady(ctx context.Context, environment, route string) error {
	for {
		c.mu.Lock()
		state, published := c.ready[environment], c.published
		c.mu.Unlock()
		if !state.routes[route] {
			select {
			case <-ctx.Done():
				return fmt.Errorf("waiting for an endpoint of %s in %q: %w", route, environment, ctx.Err())
			case <-published:
				continue
			}
		}
		if _, err := c.Server.WaitAcked(ctx, environment, func(v string) bool { return sequence(v) >= state.seq }); err != nil {
			return err
		}
		// A later snapshot may have taken the endpoints away again.
		c.mu.Lock()
		still := c.ready[environment].routes[route]
		c.mu.Unlock()
		if still {
			return nil
		}
	}
}

// Hold returns the hold timeout of a route published for the environment
// (translate.HoldTimeout); ok is false when the environment has no such
// route. The activator holds requests of such routes only.
func (c *ControlPlane) Hold(environment, route string) (hold time.Duration, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.routes[environment] {
		if r.Name == route {
			return translate.HoldTimeout(r, c.opts), true
		}
	}
	return 0, false
}

// SettingsChanged re-reads the settings of one environment, or of all when
// environment is "", and rebuilds what changed.
func (c *ControlPlane) SettingsChanged(ctx context.Context, environment string) error {
	var fresh map[string]settings.Settings
	if environment == "" {
		all, err := c.store.All(ctx)
		if err != nil {
			return err
		}
		fresh = all
	} else {
		s, err := c.store.Current(ctx, environment)
		if err != nil {
			return err
		}
		fresh = map[string]settings.Settings{environment: s}
	}
	return c.applySettings(ctx, fresh)
}

// applySettings keeps the settings newer than those held and rebuilds their
// environments. Settings read before a newer version was applied (two PUTs
// racing, each applying what it read) are older and ignored: a snapshot
// never replaces a newer one.
func (c *ControlPlane) applySettings(ctx context.Context, fresh map[string]settings.Settings) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var changed []string
	for env, s := range fresh {
		if old, ok := c.settings[env]; !ok || old.Version < s.Version {
			c.settings[env] = s
			changed = append(changed, env)
		} else if old.Version > s.Version {
			c.log.Debug("ignored settings older than those published", "environment", env,
				"version", s.Version, "published", old.Version)
		}
	}
	return c.rebuildLocked(ctx, changed)
}

// RoutesChanged replaces the routes of every environment and rebuilds the
// environments whose routes differ. Routes are kept normalized, so equal
// inputs compare equal and publish nothing.
func (c *ControlPlane) RoutesChanged(ctx context.Context, routes map[string][]ir.Route) {
	normalized := make(map[string][]ir.Route, len(routes))
	for env, rs := range routes {
		m := ir.Environment{Name: env, Routes: rs}
		for _, d := range m.Normalize() {
			c.log.Warn("route skipped", "environment", env, "customautoscaler", d.Route.Name,
				"pathPrefix", d.Route.PathPrefix, "reason", d.Reason)
		}
		normalized[env] = m.Routes
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var changed []string
	for env := range c.routes {
		if _, ok := normalized[env]; !ok {
			changed = append(changed, env)
		}
	}
	for env, rs := range normalized {
		if !routesEqual(c.routes[env], rs) {
			changed = append(changed, env)
		}
	}
	c.routes = normalized
	if err := c.rebuildLocked(ctx, changed); err != nil {
		c.log.Error("rebuilding after route change", "err", err)
	}
}

// ensure builds a snapshot for an environment an Envoy asked for.
func (c *ControlPlane) ensure(environment string) {
	if err := settings.ValidEnvironment(environment); err != nil {
		c.log.Warn("envoy asked for an invalid environment; it gets no configuration", "environment", environment)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.served[environment] {
		return
	}
	if err := c.rebuildLocked(context.Background(), []string{environment}); err != nil {
		c.log.Error("building configuration for a new environment", "environment", environment, "err", err)
	}
}

// rebuildLocked translates and publishes the given environments; c.mu must
// be held. A translation failure leaves that environment's last snapshot in
// place, so Envoy keeps serving.
func (c *ControlPlane) rebuildLocked(ctx context.Context, environments []string) error {
	var errs []error
	for _, env := range environments {
		s, ok := c.settings[env]
		if !ok {
			s = settings.Defaults(env)
		}
		m := ir.Environment{Name: env, Settings: s, Routes: c.routes[env]}
		res, err := translate.Translate(m, c.opts)
		if err != nil {
			errs = append(errs, fmt.Errorf("translating %q: %w", env, err))
			continue
		}
		c.seq++
		version := fmt.Sprintf("%d.%d", s.Version, c.seq)
		if err := c.Server.SetSnapshot(ctx, env, version, res); err != nil {
			errs = append(errs, err)
			continue
		}
		c.served[env] = true
		ready := readyRoutes{seq: c.seq, routes: map[string]bool{}}
		for _, r := range m.Routes {
			if len(r.Endpoints) > 0 {
				ready.routes[r.Name] = true
			}
		}
		c.ready[env] = ready
		close(c.published)
		c.published = make(chan struct{})
		c.log.Info("published configuration", "environment", env, "version", version,
			"policy", s.Policy, "routes", len(m.Routes))
	}
	if len(errs) > 0 {
		return fmt.Errorf("rebuilding: %v", errs)
	}
	return nil
}

func routesEqual(a, b []ir.Route) bool {
	return slices.EqualFunc(a, b, func(x, y ir.Route) bool {
		return x.Name == y.Name && x.PathPrefix == y.PathPrefix && x.Protocol == y.Protocol &&
			x.HoldTimeoutSeconds == y.HoldTimeoutSeconds && slices.Equal(x.Hosts, y.Hosts) &&
			slices.Equal(x.Headers, y.Headers) && slices.Equal(x.Endpoints, y.Endpoints)
	})
}
