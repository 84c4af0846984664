export {
  EtchError,
  abortError,
  isEtchError,
  throwIfAborted,
  toEtchError,
  untilAborted,
  type EtchErrorCode,
  type EtchErrorDetails,
  type EtchErrorOptions,
  type ToEtchErrorOptions,
} from './errors.js';
export { ignoreRejection } from './ignore-rejection.js';
export { silentLogger, type LogFields, type Logger } from './logger.js';
export {
  CURRENT_VERSION,
  LEGACY_VERSION_ENTRY_NAME,
  VERSION_1_0,
  VERSION_1_1,
  VERSION_1_2,
  VERSION_ENTRY_NAME,
  assertSupportedVersion,
  formatVersion,
  isAtLeast,
  isNewerMinor,
  isVersionEntryName,
  parseVersion,
  type FormatVersion,
} from './version.js';
export {
  INJECT_ROOT,
  MAX_PARTITION,
  assertPartition,
  injectPath,
  normalizeRelativePath,
  parseInjectName,
  parsePartition,
  resolveHardlinkTarget,
  type InjectName,
} from './paths.js';
export {
  RAW_IMAGE_EXTENSIONS,
  assertBaseImageName,
  baseImageContainer,
  isRawImageName,
  isZipImageEntry,
  type BaseImageContainer,
} from './base-image.js';
export {
  EtchOrderValidator,
  DEVICE_ENTRY_TYPES,
  INJECT_ENTRY_TYPES,
  classifyInjectEntry,
  type ClassifiedEntry,
  type EntryHeaderLike,
  type InjectEntryType,
  type TarEntryType,
} from './entries.js';
export {
  MAX_MTIME,
  MAX_NAME_BYTES,
  MAX_OWNER_ID,
  MAX_PATH_BYTES,
  MIN_MTIME,
  assertFlashable,
  checkInjectMetadata,
  type FlashableEntry,
  type InjectMetadata,
} from './flashable.js';
export { parseEntryName, type ParsedEntryName } from './entry-name.js';
export {
  MAX_REQUIREMENTS_SIZE,
  REQUIREMENTS_ENTRY_NAME,
  parseRequirements,
  serializeRequirements,
  type EtchRequirements,
  type PartitionRequirement,
} from './requirements.js';
export { DEFAULT_ENTRY_TIME, entryTime } from './entry-time.js';
