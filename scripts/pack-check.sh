#!/usr/bin/env bash
# Packs locked the way it is published and installs it the way a user does: the root package (JS,
# types, loader) plus the linux-x64-gnu platform package, into a fresh project with no Rust
# toolchain on PATH, then runs real elections through require() and import against a throwaway etcd.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
work=$(mktemp -d "${TMPDIR:-/tmp}/locked-pack.XXXXXX")
trap 'rm -rf "$work"; rm -f "$root/npm/linux-x64-gnu/locked.linux-x64-gnu.node"' EXIT
say() { printf 'pack-check: %s\n' "$*"; }

say "building the linux-x64-gnu binary for glibc 2.17 (napi-rs cross toolchain)"
if ! npm run --silent build:dist >"$work/build.log" 2>&1; then
  cat "$work/build.log" >&2
  exit 1
fi
binary=locked.linux-x64-gnu.node
needs=$(objdump -T "$binary" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
say "the binary needs $needs"
if [ "$(printf '%s\nGLIBC_2.17\n' "$needs" | sort -V | tail -1)" != "GLIBC_2.17" ]; then
  echo "pack-check: $binary needs $needs, newer than glibc 2.17" >&2
  exit 1
fi

mkdir -p "$work/dist"
cp "$binary" npm/linux-x64-gnu/
node scripts/release-check.js
# The release as npm publish makes it (napi prepublish in a copy), packed instead of published.
node scripts/stage-root.js "$work/stage" >"$work/stage.log" 2>&1 || { cat "$work/stage.log" >&2; exit 1; }
npm pack "$work/stage/npm/linux-x64-gnu" --pack-destination "$work/dist" >/dev/null
npm pack "$work/stage" --pack-destination "$work/dist" >/dev/null
say "packed: $(cd "$work/dist" && ls | tr '\n' ' ')"

project="$work/project"
mkdir -p "$project"
(
  cd "$project"
  npm init -y >/dev/null
  # What a user without Rust has: no cargo anywhere on PATH.
  PATH=$(printf '%s' "$PATH" | tr ':' '\n' | grep -v -e '\.cargo' -e 'rustup' | paste -sd: -)
  export PATH
  if command -v cargo >/dev/null; then
    echo "pack-check: cargo still on PATH" >&2
    exit 1
  fi
  npm install --no-audit --no-fund --ignore-scripts=false "$work"/dist/*.tgz >"$work/install.log" 2>&1 || { cat "$work/install.log" >&2; exit 1; }
  say "installed without a Rust toolchain"
  node "$root/scripts/pack-check-elections.js" "$project"
)
say "ok"
