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
for t in "${targets[@]}"; do
  pkg="${t%%:*}" name="${t##*:}"
  echo "fuzz: $name in $pkg for $fuzztime"
  "${GO:-go}" test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -parallel "${FUZZPARALLEL:-2}" "$pkg"
done
