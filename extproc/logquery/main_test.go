package logquery

import (
	"testing"

	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

// TestMain removes what the package's servers leave, such as the
// PostgreSQL template folder.
func TestMain(m *testing.M) { testenv.Run(m) }
