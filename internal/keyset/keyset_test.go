package keyset

import (
	"testing"
	"time"
)

func TestCursorRoundTrip(t *testing.T) {
	c := Cursor{Time: time.Date(2026, 1, 2, 3, 4, 5, 678901000, time.UTC), ID: 42}
	got, err := Decode(c.Encode())
	if err != nil || *got != c {
		t.Fatalf("round trip: %+v %v, want %+v", got, err, c)
	}
}

// FuzzCursor: a cursor either decodes to one that encodes back the same
// way, within PostgreSQL's timestamps, or is refused.
func FuzzCursor(f *testing.F) {
	f.Add((Cursor{Time: time.Unix(5, 1000), ID: 9}).Encode())
	f.Add("bm90LWEtY3Vyc29y")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Decode(s)
		if err != nil {
			return
		}
		if c.ID < 1 || c.Time.Year() < 1 || c.Time.Year() > 9999 {
			t.Fatalf("accepted %+v", c)
		}
		again, err := Decode(c.Encode())
		if err != nil || *again != *c {
			t.Fatalf("%+v encodes to %q, which decodes to %+v, %v", c, c.Encode(), again, err)
		}
	})
}
