// The pure half of the harness: nothing here runs a command, installs a tool or starts a server, so a test
// that imports only this stays in `pnpm test:unit`. Commands, tools and servers are in `@etch/test-utils/system`.
export { createTempDir, type TempDir } from './temp.js';
export { closed, collect, craftTar, patternStream, rejectionOf, sha256Of, type CraftedEntry } from './archives.js';
export {
  etchPrelude,
  paxEntry,
  paxRecords,
  rawTarEntry,
  rawTarHeader,
  tarEnd,
  type RawTarFields,
} from './hostile-tars.js';
