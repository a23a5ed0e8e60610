// Package validation has the one error type for input refused because of a
// named field or parameter. It is pure, so validation code anywhere (the
// settings, the route model, the APIs) can return it, and the HTTP layer
// (internal/httpjson) turns it into a 400 naming the field.
package validation

import "fmt"

// FieldError is a bad request body, field or parameter.
type FieldError struct {
	// Field names the field or parameter at fault, e.g. "max_connections"
	// or "[3].cpuUsage"; empty when the input as a whole is at fault.
	Field   string
	Message string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

// Errorf returns a FieldError for field with a formatted message.
func Errorf(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
}
