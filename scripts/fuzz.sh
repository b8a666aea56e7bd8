#!/usr/bin/env bash
# scripts/fuzz.sh [SECONDS]: runs every fuzz target of the module for
# SECONDS each (default 20) and fails if any fails. The targets bound what
# one call may allocate (internal/memcheck); on top of that each fuzz
# process runs under an address-space cap (LORAFIT_FUZZ_AS bytes, default
# 8 GiB), so a bomb too big to measure crashes its worker, which the fuzzer
# reports as a failure and saves under testdata/fuzz/, instead of taking the
# machine down. Targets are found by name, so new ones join automatically.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
secs=${1:-20}
cap=${LORAFIT_FUZZ_AS:-8589934592}

targets=$(grep -rHo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*' . | sed -E 's|^\./(.*)/[^/]*:func (.*)$|\1 \2|' | sort)
[ -n "$targets" ] || { echo "fuzz.sh: no fuzz targets found" >&2; exit 1; }
failed=()
while read -r dir name; do
  echo "== ./$dir $name (${secs}s)"
  # -fuzzminimizetime bounds the minimizing of new corpus entries, which
  # otherwise can take most of a short run.
  if ! go test "./$dir" -run '^$' -fuzz "^$name\$" -fuzztime "${secs}s" -fuzzminimizetime 100x \
    -exec "prlimit --as=$cap"; then
    failed+=("./$dir $name")
  fi
done <<<"$targets"
if [ ${#failed[@]} -gt 0 ]; then
  printf 'fuzz.sh: FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "fuzz.sh: all $(wc -l <<<"$targets") targets passed"
