package settings_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/nemesis-ml/nemesis/internal/validation"
	"github.com/nemesis-ml/nemesis/xds/settings"
)

// valid returns settings that pass, changed by edit.
func valid(edit func(*settings.Settings)) settings.Settings {
	s := settings.Settings{Environment: "prod", Policy: settings.RoundRobin, MaxConnections: 100, TimeoutSeconds: 30,
		RetryAttempts: 2, RetryBudgetPercent: 20, StreamIdleTimeoutSeconds: 300}
	edit(&s)
	return s
}

func TestValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		settings settings.Settings
		field    string // "" when valid
	}{
		"round robin":                 {valid(func(s *settings.Settings) {}), ""},
		"least connections":           {valid(func(s *settings.Settings) { s.Policy = settings.LeastConnections }), ""},
		"random":                      {valid(func(s *settings.Settings) { s.Policy = settings.Random }), ""},
		"the defaults":                {settings.Defaults("default"), ""},
		"bounds, low":                 {valid(func(s *settings.Settings) { s.MaxConnections, s.TimeoutSeconds = 1, 1 }), ""},
		"bounds, high":                {valid(func(s *settings.Settings) { s.MaxConnections, s.TimeoutSeconds = 1_000_000, 3600 }), ""},
		"environment of 50":           {valid(func(s *settings.Settings) { s.Environment = strings.Repeat("a", 50) }), ""},
		"environment with digits, -":  {valid(func(s *settings.Settings) { s.Environment = "eu-west-1" }), ""},
		"environment empty":           {valid(func(s *settings.Settings) { s.Environment = "" }), "environment"},
		"environment of 51":           {valid(func(s *settings.Settings) { s.Environment = strings.Repeat("a", 51) }), "environment"},
		"environment upper case":      {valid(func(s *settings.Settings) { s.Environment = "Prod" }), "environment"},
		"environment with underscore": {valid(func(s *settings.Settings) { s.Environment = "my_env" }), "environment"},
		"environment with newline":    {valid(func(s *settings.Settings) { s.Environment = "prod\n" }), "environment"},
		"policy empty":                {valid(func(s *settings.Settings) { s.Policy = "" }), "policy"},
		"policy unknown":              {valid(func(s *settings.Settings) { s.Policy = "ROUND_ROBIN" }), "policy"},
		"max_connections zero":        {valid(func(s *settings.Settings) { s.MaxConnections = 0 }), "max_connections"},
		"max_connections negative":    {valid(func(s *settings.Settings) { s.MaxConnections = -1 }), "max_connections"},
		"max_connections too many":    {valid(func(s *settings.Settings) { s.MaxConnections = 1_000_001 }), "max_connections"},
		"timeout_seconds zero":        {valid(func(s *settings.Settings) { s.TimeoutSeconds = 0 }), "timeout_seconds"},
		"timeout_seconds too long":    {valid(func(s *settings.Settings) { s.TimeoutSeconds = 3601 }), "timeout_seconds"},
		"retries off":                 {valid(func(s *settings.Settings) { s.RetryAttempts = 0 }), ""},
		"retries, most":               {valid(func(s *settings.Settings) { s.RetryAttempts = 10 }), ""},
		"retries negative":            {valid(func(s *settings.Settings) { s.RetryAttempts = -1 }), "retry_attempts"},
		"retries too many":            {valid(func(s *settings.Settings) { s.RetryAttempts = 11 }), "retry_attempts"},
		"retry budget, bounds":        {valid(func(s *settings.Settings) { s.RetryBudgetPercent = 100 }), ""},
		"retry budget zero":           {valid(func(s *settings.Settings) { s.RetryBudgetPercent = 0 }), "retry_budget_percent"},
		"retry budget over 100":       {valid(func(s *settings.Settings) { s.RetryBudgetPercent = 101 }), "retry_budget_percent"},
		"stream idle, bounds":         {valid(func(s *settings.Settings) { s.StreamIdleTimeoutSeconds = 1 }), ""},
		"stream idle zero":            {valid(func(s *settings.Settings) { s.StreamIdleTimeoutSeconds = 0 }), "stream_idle_timeout_seconds"},
		"stream idle over an hour":    {valid(func(s *settings.Settings) { s.StreamIdleTimeoutSeconds = 3601 }), "stream_idle_timeout_seconds"},
	} {
		t.Run(name, func(t *testing.T) {
			err := tc.settings.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate(%+v) = %v, want nil", tc.settings, err)
				}
				return
			}
			var fe *validation.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("Validate(%+v) = %v, want a field error on %s", tc.settings, err, tc.field)
			}
		})
	}
}

func TestDefaultsAreEnvoysOwnAndMarked(t *testing.T) {
	d := settings.Defaults("staging")
	want := settings.Settings{Environment: "staging", Policy: settings.RoundRobin, MaxConnections: 1024, TimeoutSeconds: 15,
		RetryAttempts: 2, RetryBudgetPercent: 20, StreamIdleTimeoutSeconds: 300, Default: true}
	if d != want {
		t.Errorf("Defaults(staging) = %+v, want %+v", d, want)
	}
}

// Settings made before the retry budget and the stream idle timeout
// existed get their defaults; retries they turned off stay off.
func TestWithDefaultsFillsOnlyWhatCannotBeZero(t *testing.T) {
	old := settings.Settings{Environment: "prod", Policy: settings.Random, MaxConnections: 5, TimeoutSeconds: 7}
	got := old.WithDefaults()
	if got.RetryBudgetPercent != settings.DefaultRetryBudgetPercent || got.StreamIdleTimeoutSeconds != settings.DefaultStreamIdleTimeoutSeconds || got.RetryAttempts != 0 {
		t.Fatalf("WithDefaults() = %+v", got)
	}
	if err := got.Validate(); err != nil {
		t.Fatalf("filled settings are invalid: %v", err)
	}
	set := valid(func(s *settings.Settings) { s.RetryBudgetPercent, s.StreamIdleTimeoutSeconds = 50, 60 })
	if set.WithDefaults() != set {
		t.Fatalf("WithDefaults changed settings that had every field: %+v", set.WithDefaults())
	}
}
