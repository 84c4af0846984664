export {
  findPartition,
  readPartitionTable,
  type PartitionInfo,
  type PartitionTable,
  type ReadAt,
} from './partition-table.js';
export { Ext4Reader, type Ext4Info, type Ext4Stat } from './ext4-reader.js';
export { readPartitionFile } from './partition-file.js';
export { openReadAt, readAtHandle } from './read-at.js';
export { findZipImage, readZipImage, type ZipArchive, type ZipEntryInfo, type ZipImage } from './zip-image.js';
export {
  AtomicFile,
  removeOpenTemporaryFilesSync,
  removeStalePartials,
  temporaryPathFor,
  writeFileAtomic,
  type AtomicFileOptions,
} from './atomic-file.js';
export { BufferPool, readFileChunks } from './buffer-pool.js';
export { isProcessRunning } from './process.js';
export { writeAll, writevAll } from './write-all.js';
export { EarlyWriteback } from './early-writeback.js';
