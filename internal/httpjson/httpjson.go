// Package httpjson writes JSON answers and reads JSON bodies strictly, with
// errors that name the offending field.
package httpjson

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/nemesis-ml/nemesis/internal/validation"
)

// Error is the body of every error answer.
type Error struct {
	Error string `json:"error"`
	// Field names the request field or parameter at fault, when one is.
	Field string `json:"field,omitempty"`
}

// Write answers with status and v as JSON.
func Write(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// WriteError answers with status and an Error naming field ("" for none).
func WriteError(w http.ResponseWriter, status int, field, message string) {
	Write(w, status, Error{Error: message, Field: field})
}

// Decode reads exactly one JSON value of at most maxBytes from r's body into
// v, as strictly as Unmarshal.
func Decode(w http.ResponseWriter, r *http.Request, maxBytes int64, v any) error {
	body, err := ReadBody(w, r, maxBytes)
	if err != nil {
		return err
	}
	return Unmarshal(body, v)
}

// ReadBody reads r's body, refusing one of more than maxBytes.
func ReadBody(w http.ResponseWriter, r *http.Request, maxBytes int64) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBytes))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, &validation.FieldError{Message: fmt.Sprintf("body is larger than %d bytes", maxBytes)}
	}
	if err != nil {
		return nil, &validation.FieldError{Message: "reading body: " + err.Error()}
	}
	return body, nil
}

func decodeError(err error) error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		return &validation.FieldError{Field: typeErr.Field, Message: fmt.Sprintf("must be %s, not %s", typeErr.Type, typeErr.Value)}
	case errors.As(err, &syntaxErr):
		return &validation.FieldError{Message: fmt.Sprintf("malformed JSON at byte %d: %v", syntaxErr.Offset, err)}
	case errors.Is(err, io.EOF):
		return &validation.FieldError{Message: "body is empty"}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return &validation.FieldError{Field: field, Message: "unknown field"}
	default:
		return &validation.FieldError{Message: "malformed JSON: " + err.Error()}
	}
}

// WriteBadRequest answers 400 for a validation.FieldError, 500 for anything else.
func WriteBadRequest(w http.ResponseWriter, err error) {
	var fe *validation.FieldError
	if errors.As(err, &fe) {
		WriteError(w, http.StatusBadRequest, fe.Field, fe.Error())
		return
	}
	WriteError(w, http.StatusInternalServerError, "", err.Error())
}

// HasToken reports whether r carries `Authorization: Bearer <token>`,
// comparing in constant time. It is the one bearer-token check of the APIs.
func HasToken(r *http.Request, token string) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && token != "" && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
}

// WriteUnauthorized answers 401 with the challenge a bearer-token client expects.
func WriteUnauthorized(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="nemesis"`)
	WriteError(w, http.StatusUnauthorized, "Authorization", "a valid bearer token is required")
}
