package httpjson

import (
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nemesis-ml/nemesis/internal/validation"
)

type inner struct {
	Port int `json:"port"`
}

type embedded struct {
	Zone string `json:"zone"`
}

type body struct {
	embedded
	Policy  *string          `json:"policy"`
	Max     int              `json:"max_connections"`
	Routes  []inner          `json:"routes"`
	Labels  map[string]inner `json:"labels"`
	At      time.Time        `json:"at"`
	Ignored string           `json:"-"`
	Plain   bool
}

func TestUnmarshalRefusesNamingTheKey(t *testing.T) {
	for name, tc := range map[string]struct {
		raw, field string // field "" with ok: accepted
		ok         bool
	}{
		"good":                     {raw: `{"policy":"random","max_connections":3,"routes":[{"port":1}],"labels":{"A":{"port":2}},"zone":"z","at":"2026-01-01T00:00:00Z","Plain":true}`, ok: true},
		"trailing whitespace":      {raw: "{\"policy\":\"random\"}\n\t ", ok: true},
		"trailing brace":           {raw: `{"policy":"random"}}`},
		"trailing bracket":         {raw: `{"policy":"random"}]garbage`},
		"second value":             {raw: `{"policy":"random"} {}`},
		"duplicate key":            {raw: `{"policy":"random","policy":"least_connections"}`, field: "policy"},
		"case-mismatched key":      {raw: `{"POLICY":"random","Policy":"least_connections"}`, field: "POLICY"},
		"case-mismatched nested":   {raw: `{"routes":[{"port":1},{"Port":2}]}`, field: "routes[1].Port"},
		"duplicate nested":         {raw: `{"labels":{"a":{"port":1,"port":2}}}`, field: "labels.a.port"},
		"duplicate map key":        {raw: `{"labels":{"a":{},"a":{}}}`, field: "labels.a"},
		"unknown key":              {raw: `{"colour":"blue"}`, field: "colour"},
		"ignored field by name":    {raw: `{"Ignored":"x"}`, field: "Ignored"},
		"case-mismatched untagged": {raw: `{"plain":true}`, field: "plain"},
		"embedded by its own name": {raw: `{"ZONE":"z"}`, field: "ZONE"},
		"wrong type":               {raw: `{"max_connections":"3"}`, field: "max_connections"},
		"empty":                    {raw: ``},
		"truncated":                {raw: `{"policy":`},
		"not json":                 {raw: `policy=random`},
	} {
		t.Run(name, func(t *testing.T) {
			var v body
			err := Unmarshal([]byte(tc.raw), &v)
			if tc.ok {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var fe *validation.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field || fe.Message == "" {
				t.Fatalf("error %#v, want a validation.FieldError naming %q", err, tc.field)
			}
		})
	}
}

func TestQueryRefusesWhatDoesNotParse(t *testing.T) {
	for raw, field := range map[string]string{
		"cursor=%%%":         "cursor",
		"a=1;b=2":            "a",
		"%zz=1":              "%zz",
		"limit=1&limit=2":    "limit",
		"environment=a&x=1":  "x",
		"environment=%E2%82": "",
	} {
		r := httptest.NewRequest("GET", "/x?"+raw, nil)
		_, err := Query(r, "environment", "limit", "cursor", "a")
		var fe *validation.FieldError
		if field == "" {
			if err != nil {
				t.Errorf("%s: %v", raw, err)
			}
			continue
		}
		if !errors.As(err, &fe) || fe.Field != field {
			t.Errorf("%s: error %v, want one naming %q", raw, err, field)
		}
	}
	r := httptest.NewRequest("GET", "/x?environment=prod&&limit=5", nil)
	v, err := Query(r, "environment", "limit")
	if err != nil || v.Get("environment") != "prod" || v.Get("limit") != "5" {
		t.Fatalf("%v %v", v, err)
	}
}
