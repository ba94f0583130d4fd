// The package entry for `import`: the same module as require('locked') (index.js), so a program
// that mixes import and require still has one locked, with one set of open lockers.
import { createRequire } from 'node:module'

const locked = createRequire(import.meta.url)('./index.js')

export default locked
export { locked }
export const { Singleton, Observer, LockedError } = locked
