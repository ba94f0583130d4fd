#!/usr/bin/env bash
# Builds the binary of every platform locked claims (package.json "napi.targets") and puts each in
# its npm package folder, npm/<platform>/, with napi artifacts; then scripts/release-check.js checks
# each was built for its platform. Release builds, with glibc 2.17 as the oldest glibc they need.
#   linux-x64-gnu    the machine's Rust, linked with napi-rs's x64 cross toolchain (--use-napi-cross),
#                    C compiled by Debian's GCC on that toolchain's glibc 2.17 sysroot;
#                    this build also writes binding.js and binding.d.ts, the loader the release ships
#   linux-arm64-gnu  Debian's rustc-web and its arm64 standard library, linked with napi-rs's aarch64
#                    cross toolchain (scripts/setup-cross.sh installs both), C compiled by Debian's
#                    aarch64 GCC on that toolchain's sysroot
#   linux-x64-musl   Debian's rustc-web building its standard library (-Zbuild-std), musl-gcc
#   linux-arm64-musl the same, with musl-dev:arm64's aarch64-linux-musl-gcc
#   win32-x64-msvc   Debian's rustc-web building its standard library (-Zbuild-std), mingw-w64
# The cross builds use their own Cargo folder, target/cross, so the development build stays as it is.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
started=$SECONDS
say() { printf 'build-all: [%4ds] %s\n' "$((SECONDS - started))" "$*"; }

out=target/dist
rm -rf "$out" && mkdir -p "$out"
log=$(mktemp "${TMPDIR:-/tmp}/locked-build.XXXXXX")
trap 'rm -f "$log"' EXIT
run() {
  if ! nice -n 19 "$@" >"$log" 2>&1; then
    cat "$log" >&2
    say "failed: $*"
    exit 1
  fi
}

mapfile -t targets < <(node -p "require('./package.json').napi.targets.join('\n')")
for target in "${targets[@]}"; do
  case "$target" in
    x86_64-unknown-linux-gnu)
      say "$target (napi-rs cross toolchain, glibc 2.17)"
      # As for arm64 below: the toolchain's GCC 4.8 links, Debian's GCC compiles the C code on its sysroot.
      run env TARGET_CC=gcc TARGET_CFLAGS="--sysroot=$HOME/.napi-rs/cross-toolchain/1.0.0/x86_64-unknown-linux-gnu/x86_64-unknown-linux-gnu/sysroot" \
        npx napi build --platform --release --use-napi-cross --target "$target" --js binding.js --dts binding.d.ts
      cp locked.linux-x64-gnu.node "$out/"
      ;;
    aarch64-unknown-linux-gnu)
      toolchain=$(bash scripts/setup-cross.sh | tail -1)
      say "$target (Debian rustc-web $(/usr/bin/rustc --version | cut -d' ' -f2), napi-rs aarch64 cross toolchain, glibc 2.17)"
      # The toolchain's GCC 4.8 links (against glibc 2.17); the C code (ring, mimalloc) is compiled by
      # Debian's GCC 12 on the toolchain's sysroot, as mimalloc needs C11 atomics that GCC 4.8 lacks;
      # its atomics are inlined, as GCC 4.8's libgcc has no out-of-line ones.
      run env RUSTC=/usr/bin/rustc \
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER="$toolchain/bin/aarch64-unknown-linux-gnu-gcc" \
        TARGET_CC=aarch64-linux-gnu-gcc \
        TARGET_AR="$toolchain/bin/aarch64-unknown-linux-gnu-ar" \
        TARGET_CFLAGS="-mno-outline-atomics --sysroot=$toolchain/aarch64-unknown-linux-gnu/sysroot" \
        npx napi build --platform --release --target "$target" --target-dir target/cross -o "$out" --no-js
      ;;
    x86_64-unknown-linux-musl)
      # No standard library for this target comes with rustc-web: -Zbuild-std builds it. A Node.js
      # addon links musl dynamically (-crt-static off) and, for unwinding, libgcc_s, which Alpine
      # has in /usr/lib; here the link finds Debian's (only its name ends up in the binary).
      bash scripts/setup-cross.sh >/dev/null
      say "$target (Debian rustc-web, -Zbuild-std, musl-gcc)"
      libs=$PWD/target/cross/musl-x64-libs
      mkdir -p "$libs"
      ln -sf /lib/x86_64-linux-gnu/libgcc_s.so.1 "$libs/libgcc_s.so"
      run env RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
        RUSTFLAGS="-C target-feature=-crt-static -L native=$libs" \
        CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER=musl-gcc CC_x86_64_unknown_linux_musl=musl-gcc \
        npx napi build --platform --release --target "$target" --target-dir target/cross -o "$out" --no-js -- -Zbuild-std=std,panic_abort
      ;;
    aarch64-unknown-linux-musl)
      # As x86_64-unknown-linux-musl, with the arm64 musl of Debian's musl-dev:arm64 and its
      # aarch64-linux-musl-gcc (Debian's aarch64 GCC with musl's specs); libgcc_s from libgcc-s1:arm64.
      bash scripts/setup-cross.sh >/dev/null
      say "$target (Debian rustc-web, -Zbuild-std, aarch64-linux-musl-gcc)"
      libs=$PWD/target/cross/musl-arm64-libs
      mkdir -p "$libs"
      ln -sf /lib/aarch64-linux-gnu/libgcc_s.so.1 "$libs/libgcc_s.so"
      run env RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
        RUSTFLAGS="-C target-feature=-crt-static -L native=$libs" \
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-musl-gcc CC_aarch64_unknown_linux_musl=aarch64-linux-musl-gcc \
        npx napi build --platform --release --target "$target" --target-dir target/cross -o "$out" --no-js -- -Zbuild-std=std,panic_abort
      ;;
    x86_64-pc-windows-msvc)
      # The package Node.js for Windows loads (win32-x64-msvc), built with mingw-w64 as
      # x86_64-pc-windows-gnu: no MSVC toolchain runs here. Debian's rustc-web builds the standard
      # library for it from rust-web-src (-Zbuild-std). The Node-API functions are looked up in
      # node.exe when the addon loads (napi's dyn-symbols, Cargo.toml), so napi-build's demand for a
      # libnode.dll to link against is met by an empty one that the binary does not import.
      bash scripts/setup-cross.sh >/dev/null
      say "$target (built as x86_64-pc-windows-gnu: Debian rustc-web, -Zbuild-std, mingw-w64)"
      libnode=$PWD/target/cross/libnode
      mkdir -p "$libnode"
      echo 'void locked_no_libnode(void) {}' >"$libnode/empty.c"
      x86_64-w64-mingw32-gcc -shared -o "$libnode/libnode.dll" "$libnode/empty.c"
      run env RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 LIBNODE_PATH="$libnode" \
        CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc \
        CC_x86_64_pc_windows_gnu=x86_64-w64-mingw32-gcc AR_x86_64_pc_windows_gnu=x86_64-w64-mingw32-ar \
        cargo build --release --target x86_64-pc-windows-gnu --target-dir target/cross -Zbuild-std=std,panic_abort
      dll=target/cross/x86_64-pc-windows-gnu/release/locked.dll
      if x86_64-w64-mingw32-objdump -p "$dll" | grep -qi 'DLL Name: libnode'; then
        echo "build-all: $dll imports libnode.dll, which node.exe does not provide" >&2
        exit 1
      fi
      cp "$dll" "$out/locked.win32-x64-msvc.node"
      ;;
    *)
      echo "build-all: no recipe for $target: add one here before claiming it in napi.targets" >&2
      exit 1
      ;;
  esac
done
run npx napi artifacts -o "$out" --npm-dir npm
node scripts/release-check.js
say "done"
