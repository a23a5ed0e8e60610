#!/usr/bin/env bash
# Runs every Go fuzz target for a while: `make test` for a few seconds each
# (FUZZTIME=5s), `make fuzz` longer. A failing input is written to the
# target's testdata/fuzz/<Fuzz...>/ folder: commit it with the fix, and it
# runs in every `go test` from then on.
set -euo pipefail
fuzztime="${FUZZTIME:-5s}"
targets=(
  ./internal/httpjson:FuzzUnmarshal
  ./xds/api:FuzzSettingsBody
  ./controller/ingest:FuzzDecode
  ./extproc/logquery:FuzzParse
  ./internal/keyset:FuzzCursor
  ./extproc/accesslog:FuzzRow
  ./extproc/accesslog:FuzzDecoder
  ./internal/accesslogfile:FuzzParse
  ./controller/rules:FuzzAggregateAndEvaluate
)
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for t in "${targets[@]}"; do
  pkg="${t%%:*}" name="${t##*:}"
  echo "fuzz: $name in $pkg for $fuzztime"
  if "${GO:-go}" test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -parallel "${FUZZPARALLEL:-2}" "$pkg" 2>&1 | tee "$log"; then
    continue
  fi
  # Go before 1.27 may end a duration -fuzztime with a bare "context
  # deadline exceeded" when a worker is mid-input at the deadline
  # (golang/go#75804): no input failed, none was written. Anything else
  # fails, and so does that once more.
  if grep -q 'context deadline exceeded' "$log" && ! grep -q -e 'Failing input written' -e 'panic:' "$log"; then
    echo "fuzz: $name ended on Go's fuzztime deadline race (golang/go#75804), no failing input: once more"
    "${GO:-go}" test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -parallel "${FUZZPARALLEL:-2}" "$pkg"
    continue
  fi
  exit 1
done
