package translate_test

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/nemesis-ml/nemesis/xds/ir"
	"github.com/nemesis-ml/nemesis/xds/translate"
)

var update = flag.Bool("update", false, "rewrite testdata/out from the translator's output")

type input struct {
	Environment ir.Environment    `json:"environment"`
	Options     translate.Options `json:"options"`
	// Error, when set, says the translator must refuse the environment with
	// an error containing it, and return nothing: the environment is then
	// translated as written, without Normalize, and has no output file.
	Error string `json:"error,omitempty"`
}

// TestGolden translates every testdata/in/*.yaml and compares the resources,
// as YAML, with testdata/out/*.yaml; inputs with an error must fail.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/in/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no inputs: %v", err)
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".yaml")
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var in input
			if err := yaml.UnmarshalStrict(raw, &in); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", "out", name+".yaml")
			if in.Error != "" {
				res, err := translate.Translate(in.Environment, in.Options)
				if err == nil || !strings.Contains(err.Error(), in.Error) || res != nil {
					t.Errorf("Translate = %d resource types, %v; want nothing and an error with %q", len(res), err, in.Error)
				}
				if _, err := os.Stat(path); err == nil {
					t.Errorf("%s exists for an input that must fail", path)
				}
				return
			}
			in.Environment.Normalize()
			res, err := translate.Translate(in.Environment, in.Options)
			if err != nil {
				t.Fatal(err)
			}
			for typ, list := range res {
				for _, r := range list {
					// Envoy enforces the protos' constraints; so does this test.
					if err := r.(interface{ ValidateAll() error }).ValidateAll(); err != nil {
						t.Errorf("%s is invalid: %v", typ, err)
					}
				}
			}
			got := render(t, res)
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if string(got) != string(want) {
				t.Errorf("%s differs from the translator's output (go test -update rewrites it):\n%s", path, got)
			}
		})
	}
}

func render(t *testing.T, res translate.Resources) []byte {
	t.Helper()
	doc := map[string][]any{}
	for _, typ := range []resource.Type{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType} {
		doc[typ[strings.LastIndex(typ, ".")+1:]] = toYAMLable(t, res[typ])
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func toYAMLable(t *testing.T, list []types.Resource) []any {
	t.Helper()
	out := make([]any, 0, len(list))
	for _, r := range list {
		js, err := protojson.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if err := yaml.Unmarshal(js, &v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}
