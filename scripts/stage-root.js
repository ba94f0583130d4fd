'use strict'
// Lays out the root package as published in the folder given: the files and folders package.json
// lists, and a package.json with an optional dependency on every platform package (npm installs
// only the one matching the machine), without what only development needs.
const fs = require('node:fs')
const path = require('node:path')

const root = path.join(__dirname, '..')
const out = process.argv[2]
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'))
fs.mkdirSync(out, { recursive: true })
for (const file of [...pkg.files, 'README.md']) {
  fs.cpSync(path.join(root, file), path.join(out, file), { recursive: true })
}
const platforms = fs.readdirSync(path.join(root, 'npm'))
pkg.optionalDependencies = Object.fromEntries(platforms.map((p) => {
  const name = JSON.parse(fs.readFileSync(path.join(root, 'npm', p, 'package.json'), 'utf8')).name
  return [name, pkg.version]
}))
delete pkg.devDependencies
delete pkg.overrides
delete pkg.scripts
fs.writeFileSync(path.join(out, 'package.json'), JSON.stringify(pkg, null, 2) + '\n')
