'use strict'
// Glue shared by the chaos tests (not a test file itself): competing hosts with leadership spread
// over them, the per-scenario report lines, and what the hosts' events say of leadership and fn.

const assert = require('node:assert')
const { spawnHost, leadershipReport, formatTimeline } = require('../helpers/hosts')
const { metric } = require('../helpers/util')
const { keyOf } = require('../helpers/etcd')

// Spawns one host per label, all competing for every name, with the leadership of names[j] on
// host j % labels.length (each host first registers only the names it is to lead and is elected,
// then registers the others behind the first candidate). endpoints: a list, or (i) => list.
// Resolves once every name has one key per host.
async function startCompeting ({ etcd, labels, names, ttl, prefix, endpoints, extra = {} }) {
  const hosts = []
  for (let i = 0; i < labels.length; i++) {
    const own = names.filter((_, j) => j % labels.length === i)
    const eps = typeof endpoints === 'function' ? endpoints(i) : endpoints
    const h = spawnHost({ endpoints: eps, ttl, prefix, names: own, ...extra }, labels[i])
    hosts.push(h)
    await h.ready
    for (const name of own) await h.waitFor({ ev: 'start', name }, 15000, `${labels[i]} leads ${name}`)
  }
  for (const h of hosts) {
    for (const name of names) if (!h.config.names.includes(name)) h.send({ cmd: 'register', name })
  }
  for (const name of names) {
    await etcd.waitKeys(`${prefix}/${name}/`, (kvs) => hosts.every((h) => keyOf(kvs, h.id)), 15000, `${hosts.length} candidates for ${name}`)
  }
  return hosts
}

// Events of the given kind (and optional name) after per-host marks taken with marks(hosts).
const marks = (hosts) => new Map(hosts.map((h) => [h, h.mark()]))
function since (hosts, mark, pred) {
  return hosts.flatMap((h) => h.events.slice(mark.get(h) || 0).filter(pred))
}

// The leadership summary of every name, asserted to have no overlap longer than allowOverlapMs
// (none by default), and printed as one metric line: { overlapMs (largest over the names),
// minGapMs, ...extra }.
function leadershipMetric (t, scenario, hosts, names, extra = {}, { allowOverlapMs = 0 } = {}) {
  let overlapMs = 0
  let minGapMs = null
  let terms = 0
  for (const name of names) {
    const r = leadershipReport(hosts, name)
    overlapMs = Math.max(overlapMs, r.maxOverlapMs)
    if (r.minGapMs !== null && (minGapMs === null || r.minGapMs < minGapMs)) minGapMs = r.minGapMs
    terms += r.terms.length
  }
  metric(t, scenario, { overlapMs, minGapMs, terms, ...extra })
  assert.ok(overlapMs <= allowOverlapMs, `${scenario}: two leaders at once for ${overlapMs.toFixed(1)} ms\n${timelineOf(hosts, names)}`)
  return { overlapMs, minGapMs, terms }
}

const timelineOf = (hosts, names) => formatTimeline(hosts, (e) => names.includes(e.name) || e.ev === 'exiting')

// Whether host h leads name now, as far as its events tell (its last start or stop of the name).
function leadsNow (h, name) {
  for (let i = h.events.length - 1; i >= 0; i--) {
    const e = h.events[i]
    if (e.name === name && (e.ev === 'start' || e.ev === 'stop')) return e.ev === 'start'
  }
  return false
}

// The fn events of name on host h that break "fn runs once per term, inside it": [{ e, inTerm }],
// one outside a term (inTerm false) or a second one in the same term (inTerm true).
function strayFns (h, name) {
  const stray = []
  let inTerm = false
  let fns = 0
  for (const e of h.events) {
    if (e.name !== name) continue
    if (e.ev === 'start') { inTerm = true; fns = 0 } else if (e.ev === 'stop') inTerm = false
    else if (e.ev === 'fn' && (!inTerm || ++fns > 1)) stray.push({ e, inTerm })
  }
  return stray
}

module.exports = { startCompeting, marks, since, leadershipMetric, timelineOf, leadsNow, strayFns }
