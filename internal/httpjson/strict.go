package httpjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/nemesis-ml/nemesis/internal/validation"
)

// Unmarshal decodes exactly one JSON value from raw into v, more strictly
// than encoding/json: nothing may follow the value, an object may not name
// a key twice, keys must match v's field names exactly (encoding/json
// matches them case-insensitively and lets the last duplicate win, so
// {"POLICY":"random","Policy":"least_connections"} would store the second),
// and unknown fields are refused. Errors are *validation.FieldError naming the key by
// its path, such as "[3].cpuUsage".
func Unmarshal(raw []byte, v any) error {
	if err := Check(raw, v); err != nil {
		return err
	}
	strict := json.NewDecoder(bytes.NewReader(raw))
	strict.DisallowUnknownFields()
	if err := strict.Decode(v); err != nil {
		return decodeError(err)
	}
	return nil
}

// Check does Unmarshal's checks of raw against v's type without decoding:
// one JSON value, no duplicate or case-mismatched keys, no unknown fields.
func Check(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := checkValue(dec, reflect.TypeOf(v), ""); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return &validation.FieldError{Message: fmt.Sprintf("body holds more than one JSON value (trailing data at byte %d)", dec.InputOffset())}
	}
	return nil
}

// checkValue reads one value from dec, checking the keys of its objects
// against t (nil: any keys, only duplicates are refused).
func checkValue(dec *json.Decoder, t reflect.Type, path string) error {
	tok, err := dec.Token()
	if err != nil {
		return syntaxError(err, dec)
	}
	delim, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	t = deref(t)
	switch delim {
	case '[':
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for i := 0; dec.More(); i++ {
			if err := checkValue(dec, elem, path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
	case '{':
		fields := fieldsOf(t)
		seen := map[string]bool{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return syntaxError(err, dec)
			}
			key, _ := tok.(string)
			field := key
			if path != "" {
				field = path + "." + key
			}
			if seen[key] {
				return &validation.FieldError{Field: field, Message: "appears more than once"}
			}
			seen[key] = true
			var next reflect.Type
			switch {
			case t != nil && t.Kind() == reflect.Map:
				next = t.Elem()
			case fields != nil:
				ft, known := fields[key]
				if !known {
					for name := range fields {
						if strings.EqualFold(name, key) {
							return &validation.FieldError{Field: field, Message: fmt.Sprintf("unknown field; keys are case-sensitive: did you mean %q?", name)}
						}
					}
					return &validation.FieldError{Field: field, Message: "unknown field"}
				}
				next = ft
			}
			if err := checkValue(dec, next, field); err != nil {
				return err
			}
		}
	}
	if _, err := dec.Token(); err != nil { // the closing delimiter
		return syntaxError(err, dec)
	}
	return nil
}

func syntaxError(err error, dec *json.Decoder) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		if dec.InputOffset() == 0 {
			return &validation.FieldError{Message: "body is empty"}
		}
		return &validation.FieldError{Message: "malformed JSON: unexpected end of body"}
	}
	return &validation.FieldError{Message: fmt.Sprintf("malformed JSON at byte %d: %v", dec.InputOffset(), err)}
}

func deref(t reflect.Type) reflect.Type {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// fieldsOf returns the JSON names of a struct's fields and their types, as
// encoding/json sees them (embedded structs flattened); nil when t is not a
// struct or decodes itself.
func fieldsOf(t reflect.Type) map[string]reflect.Type {
	if t == nil || t.Kind() != reflect.Struct || reflect.PointerTo(t).Implements(unmarshalerType) {
		return nil
	}
	out := map[string]reflect.Type{}
	for f := range t.Fields() {
		if !f.IsExported() && !f.Anonymous {
			continue
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && deref(f.Type).Kind() == reflect.Struct {
			for n, ft := range fieldsOf(deref(f.Type)) {
				if _, shadowed := out[n]; !shadowed {
					out[n] = ft
				}
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// Query parses r's query string strictly: a malformed pair (a bad escape,
// a semicolon) is an error rather than dropped, as url.Query would, and so
// is a parameter given twice or not in known. Errors are *validation.FieldError naming
// the parameter.
func Query(r *http.Request, known ...string) (url.Values, error) {
	v := url.Values{}
	raw := r.URL.RawQuery
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		if pair == "" {
			continue
		}
		rawKey, rawValue, _ := strings.Cut(pair, "=")
		key, err := url.QueryUnescape(rawKey)
		if err != nil || strings.Contains(rawKey, ";") {
			return nil, &validation.FieldError{Field: rawKey, Message: "malformed query parameter name"}
		}
		value, err := url.QueryUnescape(rawValue)
		if err != nil || strings.Contains(rawValue, ";") {
			return nil, &validation.FieldError{Field: key, Message: "malformed query parameter value (a bad %-escape or a semicolon)"}
		}
		if _, dup := v[key]; dup {
			return nil, &validation.FieldError{Field: key, Message: "must be given once"}
		}
		if known != nil && !slices.Contains(known, key) {
			return nil, &validation.FieldError{Field: key, Message: "unknown parameter; known: " + strings.Join(known, ", ")}
		}
		v.Set(key, value)
	}
	return v, nil
}
