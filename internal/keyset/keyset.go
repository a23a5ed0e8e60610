// Package keyset is the cursor of the newest-first pages that GET
// /proxy/logs and the decision log serve: the (time, id) of a page's last
// row, opaque to clients, from which the next page starts below.
package keyset

import (
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Cursor is the last row of a page.
type Cursor struct {
	Time time.Time
	ID   int64
}

// Encode returns the cursor as an opaque string.
func (c Cursor) Encode() string {
	raw := strconv.FormatInt(c.Time.UnixMicro(), 10) + "." + strconv.FormatInt(c.ID, 10)
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

// Decode reads a cursor Encode wrote. One that names no row PostgreSQL can
// hold (an id below 1, a year outside 1 to 9999) is an error, not a query
// that fails.
func Decode(s string) (*Cursor, error) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, err
	}
	ts, id, ok := strings.Cut(string(raw), ".")
	if !ok {
		return nil, errors.New("no separator")
	}
	micros, err1 := strconv.ParseInt(ts, 10, 64)
	n, err2 := strconv.ParseInt(id, 10, 64)
	if err1 != nil || err2 != nil {
		return nil, errors.New("not numbers")
	}
	t := time.UnixMicro(micros).UTC()
	if n < 1 || t.Year() < 1 || t.Year() > 9999 {
		return nil, errors.New("out of range")
	}
	return &Cursor{Time: t, ID: n}, nil
}
