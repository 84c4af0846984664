/** A file to write into a partition, given inline in the request. */
export interface EtchRequestFile {
  /** 1-based partition number (MBR logical partitions from 5). */
  partition: number;
  /** Path inside the partition, relative to its root (`config.json`, `system-connections/wifi`). */
  path: string;
  /** The file's content, in `encoding`. */
  content: string;
  /** `utf8` (default) or `base64`. */
  encoding?: 'utf8' | 'base64';
  /** Permission bits (default `0o644`). */
  mode?: number;
}

/** The body of `POST /v1/etch`: the same choices as the flags of `etch create`. */
export interface EtchRequest {
  /** `file:NAME` (inside the server's `--base-dir`), `eci:REGISTRY/REPO[:TAG|@VERSION]`, or an http(s) URL. */
  base: string;
  /** A zipped base image unzipped (`extract`, the default) or kept (`passthrough`), as `--base-mode`. */
  baseMode?: 'extract' | 'passthrough';
  /** Registry references to preload, as `--image`. */
  images?: string[];
  /** A balena target state whose release images are preloaded and whose apps.json is written, as `--target-state`. */
  targetState?: Record<string, unknown>;
  /** The base OS's supervisor version, as `--supervisor-version`. */
  supervisorVersion?: string;
  /** Pin the device to the target state's release, as `--pin-device`. */
  pinDevice?: boolean;
  /** The supervisor image to preload too, as `--supervisor`. */
  supervisor?: string;
  /** The device's platform (`linux/arm64`); required when preloading. */
  platform?: string;
  /** The partition holding the engine's data root (default 6), as `--data-partition`. */
  dataPartition?: number;
  /** The base OS's repositories.json to merge with, as `--repositories` (default: read from a raw base image). */
  repositories?: Record<string, unknown>;
  /** Do not merge with the base OS's repositories.json, as `--ignore-base-repositories`. */
  ignoreBaseRepositories?: boolean;
  /** Files for the partitions. */
  inject?: EtchRequestFile[];
  /** Compress the whole `.etch`, as `--compress` (default `none`). */
  compression?: 'none' | 'gzip' | 'zstd';
}

const partition = { type: 'integer', minimum: 1, maximum: 128 } as const;

/**
 * The JSON schema of {@link EtchRequest} (draft 7), as `POST /v1/etch` validates it and `GET /v1/schema`
 * publishes it: unknown fields are errors, so a typo is a 400 naming the field, never silently ignored.
 */
export const etchRequestSchema = {
  $id: 'https://github.com/balena-io-modules/dotetch/schemas/etch-request.json',
  type: 'object',
  additionalProperties: false,
  required: ['base'],
  properties: {
    base: { type: 'string', minLength: 1, maxLength: 2048 },
    baseMode: { type: 'string', enum: ['extract', 'passthrough'] },
    images: { type: 'array', maxItems: 64, items: { type: 'string', minLength: 1, maxLength: 512 } },
    targetState: { type: 'object' },
    supervisorVersion: { type: 'string', minLength: 1, maxLength: 64 },
    pinDevice: { type: 'boolean' },
    supervisor: { type: 'string', minLength: 1, maxLength: 512 },
    platform: { type: 'string', pattern: '^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$' },
    dataPartition: partition,
    repositories: { type: 'object' },
    ignoreBaseRepositories: { type: 'boolean' },
    inject: {
      type: 'array',
      maxItems: 1024,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['partition', 'path', 'content'],
        properties: {
          partition,
          path: { type: 'string', minLength: 1, maxLength: 4096 },
          content: { type: 'string' },
          encoding: { type: 'string', enum: ['utf8', 'base64'] },
          mode: { type: 'integer', minimum: 0, maximum: 0o7777 },
        },
      },
    },
    compression: { type: 'string', enum: ['none', 'gzip', 'zstd'] },
  },
} as const;
