'use strict'

// Platform names, as napi-rs names the platform packages (`locked-<platform>`): one rule for the
// loader's error (native.js) and the release check (scripts/release-check.js).

const ARCH = { x86_64: 'x64', aarch64: 'arm64', i686: 'ia32', armv7: 'arm' }
const OS = { linux: 'linux', windows: 'win32', darwin: 'darwin' }

/** The platform of a Rust target triple: `aarch64-unknown-linux-musl` -> `linux-arm64-musl`. */
function platformOfTarget (triple) {
  const parts = triple.split('-')
  const abi = parts[3] ? `-${parts[3]}` : ''
  return `${OS[parts[2]] ?? parts[2]}-${ARCH[parts[0]] ?? parts[0]}${abi}`
}

/** This process's platform: `linux-x64-gnu`, `linux-arm64-musl`, `win32-x64-msvc`, `darwin-arm64`. */
function currentPlatform () {
  const base = `${process.platform}-${process.arch}`
  if (process.platform === 'win32') return `${base}-msvc`
  if (process.platform !== 'linux') return base
  const header = process.report?.getReport?.()?.header
  return `${base}-${header?.glibcVersionRuntime ? 'gnu' : 'musl'}`
}

module.exports = { platformOfTarget, currentPlatform }
