export { createTarPack, type TarPack } from './pack.js';
export {
  promisePacker,
  whenPackerIdle,
  type EntryContent,
  type EntryHeader,
  type EntryWriter,
  type PackerOptions,
} from './packer.js';
export { spliceTar, type SplicedEntry, type SplicedTar, type SpliceTarOptions } from './splice.js';
export { extractTar, type ExtractOptions, type TarEntry, type TarHeader } from './extract.js';
export {
  readEtch,
  type EtchBaseImageEntry,
  type EtchEntry,
  type EtchInjectEntry,
  type EtchRequirementsEntry,
  type EtchUnknownEntry,
  type EtchVersionEntry,
  type ReadEtchOptions,
} from './read-etch.js';
export { createCompressor, createDecompressor, detectCompression, type Compression } from './compression.js';
export { decompressAuto, type Sniffed } from './sniff.js';
export { TarFile } from './tar-file.js';
export { indexTar, type TarIndexEntry } from './tar-index.js';
