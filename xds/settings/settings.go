// Package settings holds an environment's load-balancing settings and their
// validation. It is pure: xds/settingsdb stores them in PostgreSQL.
package settings

import (
	"fmt"
	"regexp"
	"time"

	"github.com/nemesis-ml/nemesis/internal/validation"
)

// Policy is how Envoy picks an endpoint for a request.
type Policy string

const (
	RoundRobin       Policy = "round_robin"
	LeastConnections Policy = "least_connections"
	Random           Policy = "random"
)

// Bounds of the settings that PUT accepts.
const (
	MinMaxConnections = 1
	MaxMaxConnections = 1_000_000
	MinTimeoutSeconds = 1
	MaxTimeoutSeconds = 3600
	MaxRetryAttempts  = 10
	// The retry budget is a share of the requests in flight to a cluster.
	MinRetryBudgetPercent = 1
	MaxRetryBudgetPercent = 100
	// The stream idle timeout bounds the silence between two chunks of a
	// request or answer (a token stream's tokens), not the whole answer.
	MinStreamIdleTimeoutSeconds = 1
	MaxStreamIdleTimeoutSeconds = 3600
)

// Defaults of the settings an older PUT or row may leave out.
const (
	DefaultRetryAttempts            = 2
	DefaultRetryBudgetPercent       = 20
	DefaultStreamIdleTimeoutSeconds = 300
)

// DefaultEnvironment is the environment of requests that name none.
const DefaultEnvironment = "default"

var environmentPattern = regexp.MustCompile(`^[a-z0-9-]{1,50}$`)

// Settings are one environment's load-balancing settings.
type Settings struct {
	Environment    string `json:"environment"`
	Policy         Policy `json:"policy"`
	MaxConnections int    `json:"max_connections"`
	TimeoutSeconds int    `json:"timeout_seconds"`
	// RetryAttempts is how often Envoy retries a request that never
	// reached a pod (connect failure, refused stream, reset before the
	// request was sent); 0 turns retries off. Such a retry cannot run the
	// model twice.
	RetryAttempts int `json:"retry_attempts"`
	// RetryBudgetPercent caps the retries in flight to a model at this
	// share of its requests in flight, so retries cannot pile onto a
	// model that is going away.
	RetryBudgetPercent int `json:"retry_budget_percent"`
	// StreamIdleTimeoutSeconds is how long a request or its answer may
	// send nothing before Envoy resets it.
	StreamIdleTimeoutSeconds int       `json:"stream_idle_timeout_seconds"`
	UpdatedAt                time.Time `json:"updated_at,omitzero"`
	// Version is the settings row's id, increasing with every change; 0 for
	// the built-in defaults.
	Version int64 `json:"version"`
	// Default marks the built-in defaults of an environment nobody configured.
	Default bool `json:"default,omitempty"`
}

// Defaults are what an environment runs with before anyone sets anything:
// Envoy's own defaults (round robin, 1024 connections per circuit-breaker
// threshold, a 15 s route timeout, a 5 min stream idle timeout) and
// retries of what never reached a pod, written out so they are visible.
func Defaults(environment string) Settings {
	return Settings{
		Environment:              environment,
		Policy:                   RoundRobin,
		MaxConnections:           1024,
		TimeoutSeconds:           15,
		RetryAttempts:            DefaultRetryAttempts,
		RetryBudgetPercent:       DefaultRetryBudgetPercent,
		StreamIdleTimeoutSeconds: DefaultStreamIdleTimeoutSeconds,
		Default:                  true,
	}
}

// WithDefaults fills the settings that are zero but cannot be: the retry
// budget and the stream idle timeout of settings made before they existed
// (rows get them from their columns' defaults; values built in code may
// not). A zero retry_attempts stays zero: it means no retries.
func (s Settings) WithDefaults() Settings {
	if s.RetryBudgetPercent == 0 {
		s.RetryBudgetPercent = DefaultRetryBudgetPercent
	}
	if s.StreamIdleTimeoutSeconds == 0 {
		s.StreamIdleTimeoutSeconds = DefaultStreamIdleTimeoutSeconds
	}
	return s
}

// ValidEnvironment reports whether name can name an environment.
func ValidEnvironment(name string) error {
	if !environmentPattern.MatchString(name) {
		return &validation.FieldError{Field: "environment", Message: "must match [a-z0-9-]{1,50}"}
	}
	return nil
}

// Validate checks what an operator may set.
func (s Settings) Validate() error {
	if err := ValidEnvironment(s.Environment); err != nil {
		return err
	}
	switch s.Policy {
	case RoundRobin, LeastConnections, Random:
	default:
		return &validation.FieldError{Field: "policy", Message: "must be one of round_robin, least_connections, random"}
	}
	if s.MaxConnections < MinMaxConnections || s.MaxConnections > MaxMaxConnections {
		return &validation.FieldError{Field: "max_connections", Message: fmt.Sprintf("must be between %d and %d", MinMaxConnections, MaxMaxConnections)}
	}
	if s.TimeoutSeconds < MinTimeoutSeconds || s.TimeoutSeconds > MaxTimeoutSeconds {
		return &validation.FieldError{Field: "timeout_seconds", Message: fmt.Sprintf("must be between %d and %d", MinTimeoutSeconds, MaxTimeoutSeconds)}
	}
	if s.RetryAttempts < 0 || s.RetryAttempts > MaxRetryAttempts {
		return &validation.FieldError{Field: "retry_attempts", Message: fmt.Sprintf("must be between 0 and %d", MaxRetryAttempts)}
	}
	if s.RetryBudgetPercent < MinRetryBudgetPercent || s.RetryBudgetPercent > MaxRetryBudgetPercent {
		return &validation.FieldError{Field: "retry_budget_percent", Message: fmt.Sprintf("must be between %d and %d", MinRetryBudgetPercent, MaxRetryBudgetPercent)}
	}
	if s.StreamIdleTimeoutSeconds < MinStreamIdleTimeoutSeconds || s.StreamIdleTimeoutSeconds > MaxStreamIdleTimeoutSeconds {
		return &validation.FieldError{Field: "stream_idle_timeout_seconds", Message: fmt.Sprintf("must be between %d and %d", MinStreamIdleTimeoutSeconds, MaxStreamIdleTimeoutSeconds)}
	}
	return nil
}
