#!/usr/bin/env node
'use strict'
// Do the tests bite? Each mutant below breaks one safety property on purpose, in a scratch copy
// of the repository; the tests that guard that property must then fail. A mutant whose tests
// still pass is a property no test can see.
//
//   npm run test:mutants                 # every mutant
//   npm run test:mutants -- margin-zero  # only the named ones
//
// Each mutant: the text edits that make it, and the test files expected to kill it (all of them
// part of `npm test`). The scratch copies share one cargo target dir (target/mutants), so only the
// addon itself is rebuilt per mutant.

const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const ROOT = path.join(__dirname, '..')

const MUTANTS = [
  {
    name: 'margin-zero',
    what: 'the safety margin is zero: a leader acts until the lease could expire',
    edits: [['src/session.rs', 'Duration::from_millis((ttl as u64 * 150).clamp(300, 1500))', 'Duration::ZERO']],
    tests: ['__test__/leadership.test.js']
  },
  {
    name: 'stop-after-resign',
    what: "'stop' is emitted only once the resign deleted the key (after the next host could start)",
    edits: [
      ['lib/core.js', "    this.#stopLeading(registration, 'removed')\n    this.#drained(", '    this.#drained('],
      ['lib/core.js', '    if (registration) this.#stopLeading(registration, ev.reason)', "    if (registration && ev.reason !== 'removed') this.#stopLeading(registration, ev.reason)"],
      ['lib/core.js', '    this.#registrations.delete(ev.serial)\n    this.#updateActive()\n    this.#pauseSettled(registration)\n    registration.resolveRemove()', "    this.#stopLeading(registration, 'removed')\n    this.#registrations.delete(ev.serial)\n    this.#updateActive()\n    this.#pauseSettled(registration)\n    registration.resolveRemove()"],
      ['lib/core.js', 'if (!registration || registration.removing || registration.paused', 'if (!registration || registration.paused']
    ],
    tests: ['__test__/election.test.js']
  },
  {
    name: 'leader-if-own-key-exists',
    what: 'a candidate leads as soon as its own key exists, whatever is ahead of it',
    edits: [['src/survey.rs', '        Some(first) if first.key() == own.key() => Standing::Leader {', '        Some(_) => Standing::Leader {']],
    tests: ['__test__/election.test.js']
  },
  {
    name: 'watch-ignores-deletions',
    what: 'the watch never wakes an election when a key ahead of it is deleted',
    edits: [['src/watcher.rs', '                        *d = d.then(revision, lease);\n                        true', '                        *d = d.then(revision, lease);\n                        false']],
    tests: ['__test__/election.test.js']
  },
  {
    name: 'next-in-line-on-any-deletion',
    what: 'a candidate next in line leads on the deletion of any key of its name, not only the one ahead',
    edits: [['src/watcher.rs', '            && self.lease == lease\n', '']],
    tests: ['__test__/election.test.js']
  },
  {
    name: 'next-in-line-ignores-earlier-changes',
    what: 'a candidate next in line leads on the deletion of the key ahead even when its own key changed before',
    edits: [['src/watcher.rs', '            && self.before <= since', '']],
    tests: ['__test__/interleavings.test.js']
  },
  {
    name: 'term-line-of-any-token',
    what: "a reader takes a name's line in the term records whatever term it names",
    edits: [['src/term.rs', '                .iter()\n                .find(|began| began.token == token)\n', '                .iter()\n                .next()\n']],
    tests: ['__test__/leadership.test.js']
  },
  {
    name: 'term-record-last-line-only',
    what: "a term record holds only the line of the last term begun in its bucket, not every leader's",
    edits: [['src/term.rs', '                self.buckets\n                    .entry(bucket)\n                    .or_default()\n', '                self.buckets.remove(&bucket);\n                self.buckets\n                    .entry(bucket)\n                    .or_default()\n']],
    tests: ['__test__/leadership.test.js']
  },
  {
    name: 'term-line-kept-after-resign',
    what: "a resign or a handover leaves the term's line in its record",
    edits: [['src/term.rs', 'if terms.get(&name).is_some_and(|b| b.token == token) {', 'if terms.get(&name).is_some_and(|b| b.token == token && false) {']],
    tests: ['__test__/leadership.test.js']
  },
  {
    name: 'cli-no-sigkill',
    what: 'locked run never SIGKILLs a command that ignores SIGTERM',
    edits: [
      ['cli.js', "    current.signal('SIGKILL')\n  } else {", '  } else {'],
      ['cli.js', "current.killTimer = setTimeout(() => current.signal('SIGKILL'), graceMs)", 'current.killTimer = setTimeout(() => {}, graceMs)']
    ],
    tests: ['__test__/cli.test.js']
  }
]

function run (cmd, args, opts) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024, ...opts })
  return { code: r.status, out: (r.stdout || '') + (r.stderr || '') }
}

function scratchCopy (dir) {
  // What is committed plus the working tree's changes, without build output.
  const files = run('git', ['ls-files', '-co', '--exclude-standard'], { cwd: ROOT }).out.split('\n').filter(Boolean)
  for (const f of files) {
    const from = path.join(ROOT, f)
    if (!fs.existsSync(from)) continue
    fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true })
    fs.copyFileSync(from, path.join(dir, f))
  }
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'))
}

function applyEdits (dir, mutant) {
  for (const [file, find, replace] of mutant.edits) {
    const p = path.join(dir, file)
    const text = fs.readFileSync(p, 'utf8')
    const count = text.split(find).length - 1
    if (count !== 1) throw new Error(`mutant ${mutant.name}: expected the text once in ${file}, found it ${count} times: ${JSON.stringify(find)}`)
    fs.writeFileSync(p, text.replace(find, replace))
  }
}

function main () {
  const only = process.argv.slice(2)
  const chosen = only.length ? MUTANTS.filter((m) => only.includes(m.name)) : MUTANTS
  if (only.length && chosen.length !== only.length) {
    console.error(`unknown mutant; known: ${MUTANTS.map((m) => m.name).join(', ')}`)
    process.exit(2)
  }
  const targetDir = path.join(ROOT, 'target', 'mutants')
  const results = []
  for (const mutant of chosen) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `locked-mutant-${mutant.name}-`))
    try {
      scratchCopy(dir)
      applyEdits(dir, mutant)
      const touchesRust = mutant.edits.some(([file]) => file.startsWith('src/'))
      if (touchesRust) {
        console.log(`mutant ${mutant.name}: building`)
        const build = run('npx', ['napi', 'build', '--platform', '--release', '--js', 'binding.js', '--dts', 'binding.d.ts'], { cwd: dir, env: { ...process.env, CARGO_TARGET_DIR: targetDir } })
        if (build.code !== 0) throw new Error(`mutant ${mutant.name} does not build:\n${build.out.slice(-3000)}`)
      } else {
        for (const f of ['binding.js', 'binding.d.ts']) fs.copyFileSync(path.join(ROOT, f), path.join(dir, f))
        for (const f of fs.readdirSync(ROOT).filter((f) => f.endsWith('.node'))) fs.copyFileSync(path.join(ROOT, f), path.join(dir, f))
      }
      console.log(`mutant ${mutant.name}: ${mutant.what}\n  running ${mutant.tests.join(' ')}`)
      const test = run(process.execPath, ['--test', '--test-concurrency=1', ...mutant.tests], { cwd: dir })
      const failed = test.out.split('\n').filter((l) => /^\s*not ok \d+ - /.test(l)).map((l) => l.trim().replace(/^not ok \d+ - /, ''))
      const killed = test.code !== 0
      results.push({ name: mutant.name, killed, by: failed })
      console.log(`  ${killed ? 'killed' : 'SURVIVED'}${failed.length ? ' by: ' + failed.join(' | ') : ''}`)
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }
  const survivors = results.filter((r) => !r.killed)
  console.log(`\n${results.length - survivors.length} killed, ${survivors.length} survived`)
  process.exit(survivors.length ? 1 : 0)
}

main()
