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
export { startHttp10Server, type Http10Request, type Http10Server, type Http10ServerOptions } from './http10-server.js';
export { fullGc, liveMemory } from './memory.js';
export {
  finishOciLayout,
  putLayoutBlob,
  writeLayoutIndex,
  writeLayoutManifest,
  type LayoutBlob,
} from './oci-layout.js';
