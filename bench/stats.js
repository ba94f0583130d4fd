'use strict'
// Summaries and formatting for the results table.

/** ns (BigInt) between two hrtime.bigint() readings, as milliseconds (Number). */
function ms (from, to) {
  return Number(BigInt(to) - BigInt(from)) / 1e6
}

/** min / median / p90 / max of a list of numbers (nearest-rank percentiles). */
function summarize (values) {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  if (v.length === 0) return null
  const rank = (p) => v[Math.min(v.length - 1, Math.max(0, Math.ceil(p * v.length) - 1))]
  const median = v.length % 2 === 1 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2
  return { n: v.length, min: v[0], median, p90: rank(0.9), max: v[v.length - 1] }
}

function fmtNum (x, unit = '') {
  if (x === null || x === undefined || Number.isNaN(x)) return '–'
  const a = Math.abs(x)
  let s
  if (a === 0) s = '0'
  else if (a >= 1000 || (Number.isInteger(x) && a < 1e15)) s = Math.round(x).toLocaleString('en-US')
  else if (a >= 100) s = x.toFixed(0)
  else if (a >= 10) s = x.toFixed(1)
  else if (a >= 1) s = x.toFixed(2)
  else if (a >= 0.01) s = x.toFixed(3)
  else s = x.toPrecision(2)
  return unit ? `${s} ${unit}` : s
}

/** "min / median / p90 / max" in one cell. */
function fmtSummary (summary, unit = 'ms') {
  if (!summary) return '–'
  const parts = [summary.min, summary.median, summary.p90, summary.max].map((x) => fmtNum(x))
  return `${parts.join(' / ')} ${unit}` + (summary.n > 1 ? ` (n=${summary.n})` : '')
}

function fmtRatio (a, b) {
  if (!Number.isFinite(a) || !Number.isFinite(b) || b === 0) return '–'
  const r = a / b
  return r >= 10 ? `${r.toFixed(0)}×` : r >= 1 ? `${r.toFixed(2)}×` : `${r.toPrecision(2)}×`
}

function fmtBytes (bytes) {
  if (!Number.isFinite(bytes)) return '–'
  const mb = bytes / (1024 * 1024)
  return `${fmtNum(mb)} MB`
}

/** A markdown table from a header row and rows of cells. */
function table (header, rows) {
  const esc = (c) => String(c ?? '').replace(/\|/g, '\\|').replace(/\n/g, ' ')
  const lines = [`| ${header.map(esc).join(' | ')} |`, `|${header.map(() => '---').join('|')}|`]
  for (const row of rows) lines.push(`| ${row.map(esc).join(' | ')} |`)
  return lines.join('\n')
}

module.exports = { ms, summarize, fmtNum, fmtSummary, fmtRatio, fmtBytes, table }
