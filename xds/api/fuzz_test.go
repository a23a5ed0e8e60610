package api

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/nemesis-ml/nemesis/internal/httpjson"
	"github.com/nemesis-ml/nemesis/internal/validation"
)

// FuzzSettingsBody: any PUT body either gives settings that validate and
// survive a JSON round trip unchanged, or is refused with a validation.FieldError.
func FuzzSettingsBody(f *testing.F) {
	for _, seed := range []string{
		`{"environment":"prod","policy":"round_robin","max_connections":10,"timeout_seconds":5}`,
		`{"POLICY":"random","Policy":"least_connections","max_connections":1,"timeout_seconds":1}`,
		`{"policy":"random","policy":"least_connections","max_connections":1,"timeout_seconds":1}`,
		`{"policy":"random","max_connections":1,"timeout_seconds":1}}`, `{"policy":"random"}]garbage`,
		`{"policy":"random","max_connections":1e3,"timeout_seconds":1}`, ``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var req putRequest
		err := httpjson.Unmarshal(raw, &req)
		if err == nil {
			_, err = req.settings()
		}
		var fe *validation.FieldError
		if err != nil {
			if !errors.As(err, &fe) {
				t.Fatalf("refused without a validation.FieldError: %v", err)
			}
			return
		}
		st, _ := req.settings()
		if err := st.Validate(); err != nil {
			t.Fatalf("accepted invalid settings %+v: %v", st, err)
		}
		again, err := json.Marshal(map[string]any{"environment": st.Environment, "policy": st.Policy,
			"max_connections": st.MaxConnections, "timeout_seconds": st.TimeoutSeconds})
		if err != nil {
			t.Fatal(err)
		}
		var back putRequest
		if err := httpjson.Unmarshal(again, &back); err != nil {
			t.Fatalf("%s does not decode again: %v", again, err)
		}
		if st2, err := back.settings(); err != nil || st2 != st {
			t.Fatalf("round trip of %+v gave %+v, %v", st, st2, err)
		}
	})
}
