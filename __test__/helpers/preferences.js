'use strict'
// What the tests need to know of preferred leaders (src/preference.rs), written again here so that
// a change there (which every host of a fleet must agree on) fails the tests.

// The rendezvous weight of locker `id` for election `name`: FNV-1a over name, a zero byte and id,
// then a 64-bit finaliser.
const MASK = (1n << 64n) - 1n
function weight (name, id) {
  let h = 0xcbf29ce484222325n
  for (const b of [...Buffer.from(name), 0, ...Buffer.from(id)]) {
    h ^= BigInt(b)
    h = (h * 0x100000001b3n) & MASK
  }
  h ^= h >> 33n
  h = (h * 0xff51afd7ed558ccdn) & MASK
  h ^= h >> 33n
  h = (h * 0xc4ceb9fe1a85ec53n) & MASK
  return h ^ (h >> 33n)
}

// Who should lead, of candidates [{ id, priority, balance }] in queue order (the first leads):
// that candidate, or null when the first may stay.
function preferredOf (name, candidates) {
  if (candidates.length === 0) return null
  const top = Math.max(...candidates.map((c) => c.priority))
  const best = candidates.filter((c) => c.priority === top)
  const balancing = best.filter((c) => c.balance)
  // Ties in weight go to the earlier candidate.
  const winner = balancing.length ? balancing.reduce((w, c) => (weight(name, c.id) > weight(name, w.id) ? c : w)) : best[0]
  const leader = candidates[0]
  const outranked = leader.priority < top || (leader.balance && winner !== leader)
  return outranked && winner !== leader ? winner : null
}

// A registration's priority in the randomized operation test (op-host.js), from its number: most
// have none, some rank above or below.
const PRIORITIES = [0, 1, 0, 2, -1]
const priorityOf = (reg) => PRIORITIES[reg % PRIORITIES.length]

module.exports = { weight, preferredOf, priorityOf }
