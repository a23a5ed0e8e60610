// Package api serves the load-balancer settings REST API:
// GET/PUT /loadbalancer/settings, its history, the connected Envoys' status,
// and the OpenAPI document that describes them.
package api

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nemesis-ml/nemesis/internal/httpjson"
	"github.com/nemesis-ml/nemesis/internal/validation"
	"github.com/nemesis-ml/nemesis/xds"
	"github.com/nemesis-ml/nemesis/xds/server"
	"github.com/nemesis-ml/nemesis/xds/settings"
)

//go:embed openapi.json
var openAPI []byte

const (
	maxBody           = 16 << 10
	defaultAckTimeout = 10 * time.Second
	maxAckTimeout     = 2 * time.Minute
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

// Register adds the API's routes to mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /loadbalancer/settings", h.get)
	mux.HandleFunc("PUT /loadbalancer/settings", h.put)
	mux.HandleFunc("GET /loadbalancer/settings/history", h.history)
	mux.HandleFunc("GET /loadbalancer/status", h.status)
	mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openAPI)
	})
}

func environmentParam(q url.Values) (string, error) {
	env, given := q["environment"]
	if !given {
		return settings.DefaultEnvironment, nil
	}
	if err := settings.ValidEnvironment(env[0]); err != nil {
		return "", &validation.FieldError{Field: "environment", Message: "must match [a-z0-9-]{1,50}"}
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

// putRequest has pointers so that a missing field is told from a zero.
type putRequest struct {
	Environment    *string `json:"environment"`
	Policy         *string `json:"policy"`
	MaxConnections *int    `json:"max_connections"`
	TimeoutSeconds *int    `json:"timeout_seconds"`
	// Optional: their defaults apply when left out.
	RetryAttempts            *int `json:"retry_attempts"`
	RetryBudgetPercent       *int `json:"retry_budget_percent"`
	StreamIdleTimeoutSeconds *int `json:"stream_idle_timeout_seconds"`
}

func (p putRequest) settings() (settings.Settings, error) {
	s := settings.Settings{Environment: settings.DefaultEnvironment}
	if p.Environment != nil {
		s.Environment = *p.Environment
	}
	switch {
	case p.Policy == nil:
		return s, &validation.FieldError{Field: "policy", Message: "is required"}
	case p.MaxConnections == nil:
		return s, &validation.FieldError{Field: "max_connections", Message: "is required"}
	case p.TimeoutSeconds == nil:
		return s, &validation.FieldError{Field: "timeout_seconds", Message: "is required"}
	}
	s.Policy, s.MaxConnections, s.TimeoutSeconds = settings.Policy(*p.Policy), *p.MaxConnections, *p.TimeoutSeconds
	s.RetryAttempts = valueOr(p.RetryAttempts, settings.DefaultRetryAttempts)
	s.RetryBudgetPercent = valueOr(p.RetryBudgetPercent, settings.DefaultRetryBudgetPercent)
	s.StreamIdleTimeoutSeconds = valueOr(p.StreamIdleTimeoutSeconds, settings.DefaultStreamIdleTimeoutSeconds)
	return s, s.Validate()
}

func valueOr(p *int, def int) int {
	if p == nil {
		return def
	}
	return *p
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

func waitParams(r *http.Request) (bool, time.Duration, error) {
	q, err := httpjson.Query(r, "wait", "timeout")
	if err != nil {
		return false, 0, err
	}
	switch q.Get("wait") {
	case "":
		return false, 0, nil
	case "ack":
	default:
		return false, 0, &validation.FieldError{Field: "wait", Message: "must be ack"}
	}
	timeout := defaultAckTimeout
	if raw := q.Get("timeout"); raw != "" {
		d, err := time.ParseDuration(raw)
		if err != nil || d <= 0 || d > maxAckTimeout {
			return false, 0, &validation.FieldError{Field: "timeout", Message: "must be a duration such as 5s, at most " + maxAckTimeout.String()}
		}
		timeout = d
	}
	return true, timeout, nil
}

func (h *Handler) unavailable(w http.ResponseWriter, err error) {
	h.log.Error("database unavailable", "err", err)
	httpjson.WriteError(w, http.StatusServiceUnavailable, "", "database unavailable: "+err.Error())
}
