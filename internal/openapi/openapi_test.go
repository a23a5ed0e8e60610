package openapi

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// TestDocumentsAreConsistent checks what a JSON parse does not: every $ref
// resolves, and every operation declares its error answers with the one
// Error body.
func TestDocumentsAreConsistent(t *testing.T) {
	for name, doc := range map[string][]byte{"serve.json": Serve(), "sidecar.json": Sidecar()} {
		t.Run(name, func(t *testing.T) {
			var d map[string]any
			if err := json.Unmarshal(doc, &d); err != nil {
				t.Fatal(err)
			}
			if d["openapi"] != "3.1.0" {
				t.Errorf("openapi = %v, want 3.1.0", d["openapi"])
			}
			walk(d, func(v map[string]any) {
				if ref, ok := v["$ref"].(string); ok && resolve(d, ref) == nil {
					t.Errorf("$ref %s resolves to nothing", ref)
				}
			})
			paths, _ := d["paths"].(map[string]any)
			for path, item := range paths {
				for method, op := range item.(map[string]any) {
					responses, _ := op.(map[string]any)["responses"].(map[string]any)
					for code, r := range responses {
						if !strings.HasPrefix(code, "4") {
							continue
						}
						r := r.(map[string]any)
						if ref, ok := r["$ref"].(string); ok {
							r = resolve(d, ref).(map[string]any)
						}
						schema := r["content"].(map[string]any)["application/json"].(map[string]any)["schema"].(map[string]any)
						if schema["$ref"] != "#/components/schemas/Error" {
							t.Errorf("%s %s %s: body is %v, want the Error schema", method, path, code, schema)
						}
					}
				}
			}
		})
	}
}

func TestOperationsListsEveryMethodAndPath(t *testing.T) {
	ops, err := Operations(Serve())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"GET /proxy/logs", "POST /metrics", "GET /metrics", "PUT /loadbalancer/settings", "GET /openapi.json"} {
		if !slices.Contains(ops, want) {
			t.Errorf("operations %v lack %s", ops, want)
		}
	}
}

func walk(v any, f func(map[string]any)) {
	switch v := v.(type) {
	case map[string]any:
		f(v)
		for _, c := range v {
			walk(c, f)
		}
	case []any:
		for _, c := range v {
			walk(c, f)
		}
	}
}

func resolve(doc map[string]any, ref string) any {
	var cur any = doc
	for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[part]
	}
	return cur
}

func TestCheckRoutesNamesEitherSide(t *testing.T) {
	doc := []byte(`{"paths":{"/a":{"get":{},"parameters":[]},"/b":{"post":{}}}}`)
	if err := CheckRoutes([]string{"GET /a", "POST /b"}, doc); err != nil {
		t.Errorf("matching routes: %v", err)
	}
	for patterns, want := range map[string]string{
		"GET /a,POST /b,GET /c": `route "GET /c" is not an operation`,
		"GET /a":                `operation "POST /b" is not routed`,
		"GET /a,POST /b,/b/":    `route "/b/" is not an operation`,
	} {
		err := CheckRoutes(strings.Split(patterns, ","), doc)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", patterns, err, want)
		}
	}
}
