// Package console is the web console of `nemesis serve` at /ui/: pages
// rendered on the server from embedded templates (they work without
// JavaScript), with htmx refreshing live parts and uPlot drawing charts,
// both vendored in static/. Every page's data is also a JSON API: the fleet
// and one autoscaler here (GET /autoscalers, GET /autoscalers/{ns}/{name}),
// the rest from the packages that own it (decisions, proxy logs, settings).
package console

import (
	"bytes"
	"context"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nemesis-ml/nemesis/controller/decisions"
	"github.com/nemesis-ml/nemesis/extproc/logquery"
	"github.com/nemesis-ml/nemesis/internal/httpauth"
	"github.com/nemesis-ml/nemesis/xds/server"
	"github.com/nemesis-ml/nemesis/xds/settings"
)

//go:embed templates/*.html
var templateFiles embed.FS

//go:embed static
var staticFiles embed.FS

// Settings reads the load-balancer settings; xds/settingsdb.Store is the
// production one.
type Settings interface {
	All(ctx context.Context) (map[string]settings.Settings, error)
	History(ctx context.Context, environment string, limit int) ([]settings.Settings, error)
}

// HeldRequests tells how many requests are held now per route
// (namespace/name); extproc/activator.Activator is the production one, and
// it knows only the requests of its own serve replica.
type HeldRequests interface {
	Held() map[string]int
}

// Config is what the console reads and where it writes.
type Config struct {
	Kube      client.Reader
	Pool      *pgxpool.Pool
	Decisions *decisions.Handler
	Logs      *logquery.Handler
	Settings  Settings
	// Envoys is the connected Envoys' status.
	Envoys func() []server.EnvoyStatus
	// Held is the activator's held requests; none are shown when nil.
	Held HeldRequests
	// SettingsAPI serves PUT /loadbalancer/settings, with its own token
	// check: a revert goes through it like any other client's change.
	SettingsAPI http.Handler
	// Auth is serve's authorizer: pages need the read scope, a revert the
	// settings-write scope.
	Auth *httpauth.Authorizer
	Log  *slog.Logger
}

// Console serves the pages and their JSON twins.
type Console struct {
	cfg   Config
	pages map[string]*template.Template
}

// New parses the templates.
func New(cfg Config) (*Console, error) {
	c := &Console{cfg: cfg, pages: map[string]*template.Template{}}
	for _, page := range []string{"fleet", "autoscaler", "requests", "loadbalancer", "reports", "login", "error"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFiles, "templates/layout.html", "templates/"+page+".html")
		if err != nil {
			return nil, fmt.Errorf("parsing the %s page: %w", page, err)
		}
		c.pages[page] = t
	}
	return c, nil
}

// Mux is where Register adds the routes: an *http.ServeMux, or serve's
// *httpserver.Routes that remembers them for the OpenAPI check.
type Mux interface {
	Handle(pattern string, handler http.Handler)
	HandleFunc(pattern string, handler func(http.ResponseWriter, *http.Request))
}

// Register adds the console and its JSON APIs to mux.
func (c *Console) Register(mux Mux) {
	static, _ := fs.Sub(staticFiles, "static")
	mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", cacheFor(time.Hour, http.FileServerFS(static))))
	mux.HandleFunc("GET /ui/login", c.loginPage)
	mux.HandleFunc("POST /ui/login", c.login)
	mux.HandleFunc("POST /ui/logout", c.logout)
	mux.Handle("GET /ui/{$}", c.read(c.fleetPage))
	mux.Handle("GET /ui/autoscalers/{namespace}/{name}", c.read(c.autoscalerPage))
	mux.Handle("GET /ui/requests", c.read(c.requestsPage))
	mux.Handle("GET /ui/loadbalancer", c.read(c.loadBalancerPage))
	mux.Handle("POST /ui/loadbalancer/revert", c.write(c.revert))
	mux.Handle("GET /ui/reports", c.read(c.reportsPage))
	mux.Handle("GET /ui", http.RedirectHandler("/ui/", http.StatusFound))

	mux.Handle("GET /autoscalers", c.api(c.fleetJSON))
	mux.Handle("GET /autoscalers/{namespace}/{name}", c.api(c.autoscalerJSON))
	mux.Handle("GET /proxy/logs/export", c.api(c.export))
	mux.Handle("GET /proxy/logs/summary", c.api(c.summaryJSON))
	mux.Handle("GET /reports", c.api(c.reportsAPI))
}

func cacheFor(d time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", fmt.Sprintf("public, max-age=%d", int(d.Seconds())))
		next.ServeHTTP(w, r)
	})
}

// page is what every template gets: the page's own data and the layout's.
type page struct {
	Title    string
	Nav      string
	LoggedIn bool
	Data     any
}

// render writes a page whole or not at all: a template error mid-way
// becomes a 500 rather than half a page.
func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name string, p page) {
	p.LoggedIn = c.cfg.Auth.RequiresToken() && c.allowed(r, scopeRead)
	var buf bytes.Buffer
	if err := c.pages[name].Execute(&buf, p); err != nil {
		c.cfg.Log.Error("rendering console page", "page", name, "err", err)
		http.Error(w, "rendering the page failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
}

// fail renders the error page.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	c.render(w, r, status, "error", page{Title: http.StatusText(status), Data: msg})
}
