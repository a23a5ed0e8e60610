package httpjson

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/nemesis-ml/nemesis/internal/validation"
)

// FuzzUnmarshal: whatever Unmarshal accepts, encoding/json accepts to the
// same value; whatever it refuses is a validation.FieldError.
func FuzzUnmarshal(f *testing.F) {
	for _, seed := range []string{
		`{"policy":"random","max_connections":3,"routes":[{"port":1}],"labels":{"A":{"port":2}},"zone":"z"}`,
		`{"POLICY":"random","Policy":"least_connections"}`, `{"policy":"random","policy":"x"}`,
		`{"policy":"random"}}`, `{"policy":"random"}]garbage`, `[`, `{"routes":[{"Port":1}]}`, ``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var strict body
		err := Unmarshal(raw, &strict)
		if err != nil {
			var fe *validation.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("refused without a validation.FieldError: %v", err)
			}
			return
		}
		var loose body
		if err := json.Unmarshal(raw, &loose); err != nil {
			t.Fatalf("accepted what encoding/json refuses: %v", err)
		}
		a, _ := json.Marshal(strict)
		b, _ := json.Marshal(loose)
		if string(a) != string(b) {
			t.Fatalf("strict %s, encoding/json %s", a, b)
		}
	})
}
