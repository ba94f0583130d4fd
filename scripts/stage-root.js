'use strict'
// Lays out the release in the folder given, as `npm publish` from the root would make it, without
// publishing: the root package (package.json "files", README, LICENSE) and npm/<platform>/ with
// their binaries, then napi prepublish there (--skip-optional-publish): it refuses a platform whose
// binary is missing and writes the root's optionalDependencies, one package for each claimed
// platform at the root's version. The caller packs <out> and <out>/npm/<platform>.
const fs = require('node:fs')
const path = require('node:path')
const { execFileSync } = require('node:child_process')

const root = path.join(__dirname, '..')
const out = process.argv[2]
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'))
fs.mkdirSync(out, { recursive: true })
for (const file of [...pkg.files, 'README.md', 'LICENSE', 'package.json', 'npm']) {
  fs.cpSync(path.join(root, file), path.join(out, file), { recursive: true })
}
const napi = path.join(root, 'node_modules', '.bin', 'napi')
execFileSync(napi, ['prepublish', '-t', 'npm', '--no-gh-release', '--skip-optional-publish'], { cwd: out, stdio: 'inherit' })
const staged = JSON.parse(fs.readFileSync(path.join(out, 'package.json'), 'utf8'))
const wanted = pkg.napi.targets.length
if (Object.keys(staged.optionalDependencies ?? {}).length !== wanted) {
  throw new Error(`napi prepublish wrote ${JSON.stringify(staged.optionalDependencies)}, not ${wanted} platform packages`)
}
