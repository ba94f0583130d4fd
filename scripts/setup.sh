#!/usr/bin/env bash
# Idempotent set-up for `npm test` and `npm run demo` (their pre-scripts): system packages (the list in
# scripts/system-packages.txt), Rust, npm packages, then an incremental build of the native addon.
# One line per step on success; the full output of a failing step otherwise.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: %s\n' "$*" >&2; exit 1; }

LOG="$(mktemp "${TMPDIR:-/tmp}/locked-setup.XXXXXX")"
trap 'rm -f "$LOG"' EXIT
# Run a step quietly; on failure show its output and stop.
quiet() {
  if ! "$@" >"$LOG" 2>&1; then
    cat "$LOG" >&2
    die "failed: $*"
  fi
}

# The one list of system packages, shared with .ci/run.
mapfile -t SYSTEM_PACKAGES < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' scripts/system-packages.txt)

# What the build and the tests use from those packages; the include files are checked too, since
# protoc without them fails only deep inside the Rust build ("descriptor.proto: File not found").
missing_tools() {
  local tool
  for tool in etcd etcdctl protoc openssl; do
    command -v "$tool" >/dev/null || printf '%s\n' "$tool"
  done
  if [ -z "${PROTOC_INCLUDE:-}" ] && [ ! -f /usr/include/google/protobuf/descriptor.proto ] &&
    [ ! -f /usr/local/include/google/protobuf/descriptor.proto ]; then
    printf '%s\n' "protoc's include files (google/protobuf/descriptor.proto)"
  fi
}
# Debian packages of the list that are not installed (none when this is not a Debian machine).
missing_packages() {
  command -v dpkg-query >/dev/null || return 0
  local pkg
  for pkg in "${SYSTEM_PACKAGES[@]}"; do
    dpkg-query -W -f '${db:Status-Abbrev}' "$pkg" 2>/dev/null | grep -q '^.i' || printf '%s\n' "$pkg"
  done
}

# 1. etcd, etcdctl (tests and demo), protoc and its include files (the build of etcd-client's
#    protobufs), openssl (test certificates).
mapfile -t absent < <(missing_packages)
mapfile -t missing < <(missing_tools)
if [ "${#absent[@]}" -gt 0 ] || [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    say "installing ${SYSTEM_PACKAGES[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    quiet apt-get update
    quiet apt-get install -y --no-install-recommends "${SYSTEM_PACKAGES[@]}"
    mapfile -t missing < <(missing_tools)
    [ "${#missing[@]}" -eq 0 ] || die "still missing after apt-get install ${SYSTEM_PACKAGES[*]}: ${missing[*]}"
  elif [ "${#missing[@]}" -gt 0 ]; then
    {
      echo "setup: missing: ${missing[*]}"
      echo "setup: on Debian/Ubuntu install them with:"
      echo "    sudo apt-get update && sudo apt-get install -y --no-install-recommends ${SYSTEM_PACKAGES[*]}"
      echo "setup: (or run this as root and it installs them; elsewhere: etcd 3.4+ from https://etcd.io,"
      echo "setup:  and protoc with its include files from your package manager)"
    } >&2
    exit 1
  fi
fi
say "etcd $(etcd --version 2>/dev/null | sed -n 's/^etcd Version: //p'), $(protoc --version)"

# 2. Rust (builds the addon).
if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null; then
  {
    echo "setup: cargo (Rust) is missing; install it with rustup:"
    echo "    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y"
    echo "    . \"\$HOME/.cargo/env\""
    echo "setup: then run this command again."
  } >&2
  exit 1
fi
say "$(cargo --version)"

# 3. npm packages.
if [ ! -d node_modules/@napi-rs/cli ]; then
  say "installing npm packages (npm install)"
  quiet npm install --no-audit --no-fund
else
  say "npm packages present"
fi

# 4. The addon (incremental: quick when nothing changed; the first build takes a few minutes).
say "building the addon (npm run build)"
quiet npm run build
