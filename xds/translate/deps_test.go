package translate_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/nemesis-ml/nemesis/internal/testing/deptest"
)

// The translator is pure: it reaches no database, cluster, network or
// process, so nothing that does any of those may be in its build.
func TestTranslatorImportsNoIO(t *testing.T) {
	deps := deptest.Deps(t, "github.com/nemesis-ml/nemesis/xds/translate")
	ours := map[string]bool{
		"github.com/nemesis-ml/nemesis/xds/translate":          true,
		"github.com/nemesis-ml/nemesis/xds/ir":                 true,
		"github.com/nemesis-ml/nemesis/xds/settings":           true,
		"github.com/nemesis-ml/nemesis/extproc/holdmeta":       true,
		"github.com/nemesis-ml/nemesis/internal/validation":    true,
		"github.com/nemesis-ml/nemesis/internal/accesslogfile": true,
	}
	io := []string{"net/http", "os/exec", "database/sql", "github.com/jackc/pgx", "github.com/redis/",
		"google.golang.org/grpc", "k8s.io/client-go", "sigs.k8s.io/controller-runtime"}
	forbidden := func(path string) bool {
		if strings.HasPrefix(path, "github.com/nemesis-ml/nemesis/") {
			return !ours[path]
		}
		return slices.ContainsFunc(io, func(p string) bool { return strings.HasPrefix(path, p) })
	}
	for dep, by := range deptest.Importers(deps, forbidden) {
		t.Errorf("xds/translate's build imports %s (from %s)", dep, strings.Join(by, ", "))
	}
}
