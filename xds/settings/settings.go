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
)

// DefaultEnvironment is the environment of requests that name none.
const DefaultEnvironment = "default"

var environmentPattern = regexp.MustCompile(`^[a-z0-9-]{1,50}$`)

// Settings are one environment's load-balancing settings.
type Settings struct {
	Environment    string    `json:"environment"`
	Policy         Policy    `json:"policy"`
	MaxConnections int       `json:"max_connections"`
	TimeoutSeconds int       `json:"timeout_seconds"`
	UpdatedAt      time.Time `json:"updated_at,omitzero"`
	// Version is the settings row's id, increasing with every change; 0 for
	// the built-in defaults.
	Version int64 `json:"version"`
	// Default marks the built-in defaults of an environment nobody configured.
	Default bool `json:"default,omitempty"`
}

// Defaults are what an environment runs with before anyone sets anything:
// Envoy's own defaults (round robin, 1024 connections per circuit-breaker
// threshold, a 15 s route timeout), written out so they are visible.
func Defaults(environment string) Settings {
	return Settings{
		Environment:    environment,
		Policy:         RoundRobin,
		MaxConnections: 1024,
		TimeoutSeconds: 15,
		Default:        true,
	}
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
	return nil
}
