// Package api serves the load-balancer settings REST API:
// GET/PUT /loadbalancer/settings, its history and the connected Envoys'
// status. internal/openapi's serve.json describes them.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nemesis-ml/nemesis/internal/httpjson"
	"github.com/nemesis-ml/nemesis/internal/validation"
	"github.com/nemesis-ml/nemesis/xds"
	"github.com/nemesis-ml/nemesis/xds/server"
	"github.com/nemesis-ml/nemesis/xds/settings"
)

const (
	maxBody           = 16 << 10
	defaultAckTimeout = 10 * time.Second
	defaultHistory    = 20
	maxHistory        = 1000
)

// Handler serves the API.
type Handler struct {
	log     *slog.Logger
	store   Store
	cp      *xds.ControlPlane
	refused prometheus.Counter
}

// Store reads and writes the settings; xds/settingsdb.Store is the
// production one.
type Store interface {
	Current(ctx context.Context, environment string) (settings.Settings, error)
	History(ctx context.Context, environment string, limit int) ([]settings.Settings, error)
	Insert(ctx context.Context, s settings.Settings) (settings.Settings, error)
}

// New returns the API's handler, its counter registered in reg.
func New(log *slog.Logger, store Store, cp *xds.ControlPlane, reg prometheus.Registerer) (*Handler, error) {
	h := &Handler{log: log, store: store, cp: cp, refused: prometheus.NewCounter(prometheus.CounterOpts{
		Name: "nemesis_settings_requests_refused_total",
		Help: "Load-balancer settings API requests answered 400 for their parameters or body.",
	})}
	if err := reg.Register(h.refused); err != nil {
		return nil, fmt.Errorf("registering settings API counter: %w", err)
	}
	return h, nil
}

// refuse answers 400 naming the field, counts it and logs the input.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, err error, body []byte) {
	h.refused.Inc()
	h.log.Info("refused a settings request", "method", r.Method, "path", r.URL.Path, "query", r.URL.RawQuery,
		"body", string(body[:min(len(body), 512)]), "err", err)
	httpjson.WriteBadRequest(w, err)
}

// Mux is where Register adds the routes: an *http.ServeMux, or the
// *httpserver.Routes that remembers them for the OpenAPI check.
type Mux interface {
	Handle(pattern string, handler http.Handler)
}

// Register adds the API's routes to mux, unguarded: serve puts them behind
// Guarded.
func (h *Handler) Register(mux Mux) {
	mux.Handle("GET /loadbalancer/settings", http.HandlerFunc(h.get))
	mux.Handle("PUT /loadbalancer/settings", http.HandlerFunc(h.put))
	mux.Handle("GET /loadbalancer/settings/history", http.HandlerFunc(h.history))
	mux.Handle("GET /loadbalancer/status", http.HandlerFunc(h.status))
}

// environmentParam is the environment named by the query, the default one
// when none is. Given but empty is refused like any other invalid name, not
// taken for the default.
func environmentParam(q url.Values) (string, error) {
	env, given := q["environment"]
	if !given {
		return settings.DefaultEnvironment, nil
	}
	if err := settings.ValidEnvironment(env[0]); err != nil {
		return "", err
	}
	return env[0], nil
}

func (h *Handler) get(w http.ResponseWriter, r *http.Request) {
	q, err := httpjson.Query(r, "environment")
	var env string
	if err == nil {
		env, err = environmentParam(q)
	}
	if err != nil {
		h.refuse(w, r, err, nil)
		return
	}
	s, err := h.store.Current(r.Context(), env)
	if err != nil {
		h.unavailable(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, s)
}

func (h *Handler) history(w http.ResponseWriter, r *http.Request) {
	q, err := httpjson.Query(r, "environment", "limit")
	var env string
	if err == nil {
		env, err = environmentParam(q)
	}
	if err != nil {
		h.refuse(w, r, err, nil)
		return
	}
	limit := defaultHistory
	if raw, given := q["limit"]; given {
		limit, err = strconv.Atoi(raw[0])
		if err != nil || limit < 1 || limit > maxHistory {
			h.refuse(w, r, &validation.FieldError{Field: "limit", Message: "must be a whole number from 1 to " + strconv.Itoa(maxHistory)}, nil)
			return
		}
	}
	list, err := h.store.History(r.Context(), env, limit)
	if err != nil {
		h.unavailable(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, list)
}

func (h *Handler) status(w http.ResponseWriter, _ *http.Request) {
	byEnv := map[string][]server.EnvoyStatus{}
	for _, st := range h.cp.Server.Status() {
		byEnv[st.Environment] = append(byEnv[st.Environment], st)
	}
	httpjson.Write(w, http.StatusOK, map[string]any{"environments": byEnv})
}

// putRequest keeps the fields raw so that a missing field is told from a
// zero and from null, and a whole number written 100.0 is read as JSON
// Schema's integer is.
type putRequest struct {
	Environment    json.RawMessage `json:"environment"`
	Policy         *string         `json:"policy"`
	MaxConnections json.RawMessage `json:"max_connections"`
	TimeoutSeconds json.RawMessage `json:"timeout_seconds"`
	// Optional: their defaults apply when left out.
	RetryAttempts            json.RawMessage `json:"retry_attempts"`
	RetryBudgetPercent       json.RawMessage `json:"retry_budget_percent"`
	StreamIdleTimeoutSeconds json.RawMessage `json:"stream_idle_timeout_seconds"`
}

func (p putRequest) settings() (settings.Settings, error) {
	s := settings.Settings{Environment: settings.DefaultEnvironment}
	if p.Environment != nil {
		// null is refused rather than read as "the default": a client that
		// sends null most likely lost the name it meant.
		if err := json.Unmarshal(p.Environment, &s.Environment); err != nil || string(p.Environment) == "null" {
			return s, &validation.FieldError{Field: "environment", Message: "must be a string; leave it out for the environment named default"}
		}
	}
	if p.Policy == nil {
		return s, &validation.FieldError{Field: "policy", Message: "is required"}
	}
	s.Policy = settings.Policy(*p.Policy)
	var err error
	if s.MaxConnections, err = wholeNumber("max_connections", p.MaxConnections); err != nil {
		return s, err
	}
	if s.TimeoutSeconds, err = wholeNumber("timeout_seconds", p.TimeoutSeconds); err != nil {
		return s, err
	}
	if s.RetryAttempts, err = wholeNumberOr("retry_attempts", p.RetryAttempts, settings.DefaultRetryAttempts); err != nil {
		return s, err
	}
	if s.RetryBudgetPercent, err = wholeNumberOr("retry_budget_percent", p.RetryBudgetPercent, settings.DefaultRetryBudgetPercent); err != nil {
		return s, err
	}
	if s.StreamIdleTimeoutSeconds, err = wholeNumberOr("stream_idle_timeout_seconds", p.StreamIdleTimeoutSeconds, settings.DefaultStreamIdleTimeoutSeconds); err != nil {
		return s, err
	}
	return s, s.Validate()
}

// wholeNumber reads a required JSON number without a fraction: 100, 100.0
// and 1e2 alike, and not "100". Values past an int32 are left to the
// settings' own bounds to refuse.
func wholeNumber(field string, raw json.RawMessage) (int, error) {
	if raw == nil || string(raw) == "null" {
		return 0, &validation.FieldError{Field: field, Message: "is required"}
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || f != math.Trunc(f) {
		return 0, &validation.FieldError{Field: field, Message: "must be a whole number, not " + string(raw)}
	}
	return int(max(min(f, math.MaxInt32), math.MinInt32)), nil
}

// wholeNumberOr is wholeNumber for an optional field: def when it is left
// out, refused when it is null.
func wholeNumberOr(field string, raw json.RawMessage, def int) (int, error) {
	if raw == nil {
		return def, nil
	}
	return wholeNumber(field, raw)
}

// putResponse is the stored settings and, with ?wait=ack, the Envoys that
// applied them.
type putResponse struct {
	settings.Settings
	AckedBy []server.EnvoyStatus `json:"acked_by,omitempty"`
	Pending []server.EnvoyStatus `json:"pending,omitempty"`
	Error   string               `json:"error,omitempty"`
}

func (h *Handler) put(w http.ResponseWriter, r *http.Request) {
	wait, timeout, err := waitParams(r)
	if err != nil {
		h.refuse(w, r, err, nil)
		return
	}
	body, err := httpjson.ReadBody(w, r, maxBody)
	if err != nil {
		h.refuse(w, r, err, nil)
		return
	}
	var req putRequest
	if err := httpjson.Unmarshal(body, &req); err != nil {
		h.refuse(w, r, err, body)
		return
	}
	s, err := req.settings()
	if err != nil {
		h.refuse(w, r, err, body)
		return
	}
	stored, err := h.store.Insert(r.Context(), s)
	if err != nil {
		h.unavailable(w, fmt.Errorf("nothing was changed: %w", err))
		return
	}
	h.log.Info("settings changed", "environment", stored.Environment, "version", stored.Version,
		"policy", stored.Policy, "max_connections", stored.MaxConnections, "timeout_seconds", stored.TimeoutSeconds,
		"retry_attempts", stored.RetryAttempts, "retry_budget_percent", stored.RetryBudgetPercent,
		"stream_idle_timeout_seconds", stored.StreamIdleTimeoutSeconds)
	// Apply here at once rather than waiting for our own NOTIFY; the other
	// replicas apply it on theirs.
	if err := h.cp.SettingsChanged(r.Context(), stored.Environment); err != nil {
		h.log.Warn("applying settings now failed; the listener will retry", "environment", stored.Environment, "err", err)
	}
	if !wait {
		httpjson.Write(w, http.StatusOK, putResponse{Settings: stored})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	envoys, err := h.cp.Server.WaitAcked(ctx, stored.Environment, func(v string) bool { return xds.Version(v) >= stored.Version })
	var nack *server.NackError
	switch {
	case err == nil:
		httpjson.Write(w, http.StatusOK, putResponse{Settings: stored, AckedBy: envoys})
	case errors.As(err, &nack):
		httpjson.Write(w, http.StatusBadGateway, putResponse{Settings: stored, Error: "stored, but " + nack.Error()})
	default:
		httpjson.Write(w, http.StatusGatewayTimeout, putResponse{Settings: stored, Pending: envoys,
			Error: "stored, but not every envoy acknowledged it within " + timeout.String()})
	}
}

// ackTimeout is the form ?timeout= takes: a whole number of ms, s or m
// from 1ms to 2m. The OpenAPI document declares the same
// pattern, so every value it allows is accepted and no other.
var ackTimeout = regexp.MustCompile(`^([1-9][0-9]{0,4}|1[01][0-9]{4}|120000)ms$|^([1-9][0-9]?|1[01][0-9]|120)s$|^[12]m$`)

func waitParams(r *http.Request) (bool, time.Duration, error) {
	q, err := httpjson.Query(r, "wait", "timeout")
	if err != nil {
		return false, 0, err
	}
	if raw, given := q["timeout"]; given && !ackTimeout.MatchString(raw[0]) {
		return false, 0, &validation.FieldError{Field: "timeout", Message: "must be a whole number of ms, s or m from 1ms to 2m, such as 20s"}
	}
	wait, given := q["wait"]
	if !given {
		return false, 0, nil
	}
	if wait[0] != "ack" {
		return false, 0, &validation.FieldError{Field: "wait", Message: "must be ack"}
	}
	timeout := defaultAckTimeout
	if raw := q.Get("timeout"); raw != "" {
		d, err := time.ParseDuration(raw)
		if err != nil {
			return false, 0, fmt.Errorf("parsing timeout %q that matched its pattern: %w", raw, err)
		}
		timeout = d
	}
	return true, timeout, nil
}

func (h *Handler) unavailable(w http.ResponseWriter, err error) {
	h.log.Error("database unavailable", "err", err)
	httpjson.WriteError(w, http.StatusServiceUnavailable, "", "database unavailable: "+err.Error())
}
