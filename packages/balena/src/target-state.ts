import { EtchError } from '@etch/format';

/** Environment variables or labels: names to string values. */
export type StringMap = Record<string, string>;

/** A service of a release in a v3 target state. Fields not listed are kept as given. */
export interface TargetService {
  /** The service id. */
  id: number;
  /** The image id (the API's `image` row). */
  image_id: number;
  /** The image reference the supervisor pulls, e.g. `registry2.balena-cloud.com/v2/<hash>@sha256:…`. */
  image: string;
  /** Service environment; `{}` when the state omits it. */
  environment: StringMap;
  /** Service labels; `{}` when the state omits it. */
  labels: StringMap;
  /** The compose settings of the service. */
  composition?: Record<string, unknown>;
  [key: string]: unknown;
}

/** A release (keyed by its commit / uuid) in a v3 target state. */
export interface TargetRelease {
  /** The release id. */
  id: number;
  /** Services by service name. */
  services: Record<string, TargetService>;
  /** Compose volumes; `{}` when omitted. */
  volumes: Record<string, unknown>;
  /** Compose networks; `{}` when omitted. */
  networks: Record<string, unknown>;
  [key: string]: unknown;
}

/** An app (keyed by its uuid) in a v3 target state. */
export interface TargetApp {
  /** The numeric app (fleet) id; v1 and v2 apps.json key apps by it. */
  id: number;
  /** The app name. */
  name: string;
  /** True for the host OS app. */
  is_host?: boolean;
  /** `fleet`, `block` or `app`. */
  class?: string;
  /** Releases by commit. */
  releases: Record<string, TargetRelease>;
  [key: string]: unknown;
}

/**
 * A v3 fleet target state, the shape `GET /device/v3/fleet/:uuid/state` (and the SDK's
 * `getSupervisorTargetStateForApp`) returns under the fleet uuid.
 */
export interface FleetTargetState {
  kind: 'fleet';
  /** The top-level key, when the file had one. */
  uuid?: string;
  /** The fleet name (not written to apps.json). */
  name?: string;
  /** Device configuration (`BALENA_SUPERVISOR_*`, `BALENA_HOST_*`…); `{}` when omitted. */
  config: StringMap;
  /** Apps by uuid. */
  apps: Record<string, TargetApp>;
}

/** An app of a legacy v1 device state (`local.apps[appId]`): one image per app. */
export interface LegacyTargetApp {
  /** The image reference. */
  image: string;
  /** Environment; `{}` when omitted. */
  environment: StringMap;
  name?: string;
  commit?: string;
  releaseId?: number;
  config?: StringMap;
  [key: string]: unknown;
}

/**
 * A legacy v1 device state (`GET /device/v1/:uuid/state`: `{ local: { config, apps: { [appId]: … } } }`).
 * It only has what a v1 apps.json needs, so it can only produce that format.
 */
export interface LegacyTargetState {
  kind: 'legacy-v1';
  /** Device configuration; `{}` when omitted. */
  config: StringMap;
  /** Apps by app id. */
  apps: Record<string, LegacyTargetApp>;
}

/** A validated target state; {@link parseTargetState} makes one. */
export type TargetState = FleetTargetState | LegacyTargetState;

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function invalid(field: string, message: string): EtchError {
  return new EtchError('ETCH_USAGE', `Invalid target state: ${field ? `${field} ` : ''}${message}`, {
    details: { field },
  });
}

function expectObject(value: unknown, field: string): Json {
  if (!isObject(value)) throw invalid(field, `must be an object, found ${describe(value)}.`);
  return value;
}

function expectId(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw invalid(field, `must be a non-negative integer id, found ${describe(value)}.`);
  }
  return value;
}

function expectString(value: unknown, field: string): string {
  if (typeof value !== 'string' || value.trim() === '')
    throw invalid(field, `must be a non-empty string, found ${describe(value)}.`);
  return value;
}

function stringMap(value: unknown, field: string): StringMap {
  if (value === undefined || value === null) return {};
  const obj = expectObject(value, field);
  for (const [key, v] of Object.entries(obj)) {
    if (typeof v !== 'string') throw invalid(`${field}.${key}`, `must be a string, found ${describe(v)}.`);
  }
  return { ...(obj as StringMap) };
}

function optionalObject(value: unknown, field: string): Json {
  if (value === undefined || value === null) return {};
  return structuredClone(expectObject(value, field));
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'object') return 'an object';
  // eslint-disable-next-line @typescript-eslint/no-base-to-string -- a primitive here: objects were handled above
  return `${typeof value} ${String(value)}`;
}

function parseService(value: unknown, field: string): TargetService {
  const s = expectObject(value, field);
  const service: TargetService = {
    ...structuredClone(s),
    id: expectId(s['id'], `${field}.id`),
    image_id: expectId(s['image_id'], `${field}.image_id`),
    image: expectString(s['image'], `${field}.image`).trim(),
    environment: stringMap(s['environment'], `${field}.environment`),
    labels: stringMap(s['labels'], `${field}.labels`),
  };
  if (s['composition'] !== undefined) service.composition = optionalObject(s['composition'], `${field}.composition`);
  return service;
}

function parseRelease(value: unknown, field: string): TargetRelease {
  const r = expectObject(value, field);
  const services: Record<string, TargetService> = {};
  for (const [name, s] of Object.entries(expectObject(r['services'], `${field}.services`))) {
    services[name] = parseService(s, `${field}.services.${name}`);
  }
  return {
    ...structuredClone(r),
    id: expectId(r['id'], `${field}.id`),
    services,
    volumes: optionalObject(r['volumes'], `${field}.volumes`),
    networks: optionalObject(r['networks'], `${field}.networks`),
  };
}

/** @internal Validates one v3 app (shared with apps.json validation). */
export function parseApp(value: unknown, field: string): TargetApp {
  const a = expectObject(value, field);
  const releases: Record<string, TargetRelease> = {};
  for (const [commit, r] of Object.entries(expectObject(a['releases'] ?? {}, `${field}.releases`))) {
    releases[commit] = parseRelease(r, `${field}.releases.${commit}`);
  }
  const app: TargetApp = {
    ...structuredClone(a),
    id: expectId(a['id'], `${field}.id`),
    name: expectString(a['name'], `${field}.name`),
    releases,
  };
  if (a['is_host'] !== undefined && typeof a['is_host'] !== 'boolean')
    throw invalid(`${field}.is_host`, 'must be a boolean.');
  if (a['class'] !== undefined && typeof a['class'] !== 'string') throw invalid(`${field}.class`, 'must be a string.');
  return app;
}

function parseFleet(value: Json, uuid: string | undefined): FleetTargetState {
  const prefix = uuid === undefined ? '' : `${uuid}.`;
  const apps: Record<string, TargetApp> = {};
  for (const [appUuid, a] of Object.entries(expectObject(value['apps'], `${prefix}apps`))) {
    apps[appUuid] = parseApp(a, `${prefix}apps.${appUuid}`);
  }
  const name = value['name'];
  if (name !== undefined && typeof name !== 'string') throw invalid(`${prefix}name`, 'must be a string.');
  const state: FleetTargetState = { kind: 'fleet', config: stringMap(value['config'], `${prefix}config`), apps };
  if (uuid !== undefined) state.uuid = uuid;
  if (name !== undefined) state.name = name;
  return state;
}

function parseLegacy(local: Json): LegacyTargetState {
  const apps: Record<string, LegacyTargetApp> = {};
  for (const [appId, value] of Object.entries(expectObject(local['apps'], 'local.apps'))) {
    const field = `local.apps.${appId}`;
    const a = expectObject(value, field);
    if (a['services'] !== undefined) {
      throw invalid(
        field,
        'has services: this is a v2 device state, which is not supported; use the v3 fleet state (GET /device/v3/fleet/:uuid/state).',
      );
    }
    const app: LegacyTargetApp = {
      ...structuredClone(a),
      image: expectString(a['image'], `${field}.image`).trim(),
      environment: stringMap(a['environment'], `${field}.environment`),
    };
    if (a['config'] !== undefined) app.config = stringMap(a['config'], `${field}.config`);
    apps[appId] = app;
  }
  return { kind: 'legacy-v1', config: stringMap(local['config'], 'local.config'), apps };
}

/**
 * Validates a target state and returns it normalised (missing `environment`, `labels`, `volumes`,
 * `networks` and `config` become `{}`; unknown fields are kept).
 *
 * Accepted shapes:
 * - a v3 fleet state with its uuid key, `{ [fleetUuid]: { name, config, apps: { [appUuid]: { id, name, releases } } } }`;
 * - the same without the uuid key, `{ name, config, apps }`;
 * - a legacy v1 device state, `{ local: { config, apps: { [appId]: { image, environment, … } } } }`.
 *
 * @param input the parsed JSON, or its text.
 * @throws EtchError `ETCH_USAGE` naming the offending field.
 *
 * @example
 * ```ts
 * const state = parseTargetState(await readFile('state.json', 'utf8'))
 * ```
 */
export function parseTargetState(input: unknown): TargetState {
  if (isObject(input) && parsedStates.has(input)) return input as unknown as TargetState;
  let value = input;
  if (typeof input === 'string' || Buffer.isBuffer(input)) {
    try {
      value = JSON.parse(input.toString());
    } catch (cause) {
      throw new EtchError('ETCH_USAGE', 'Invalid target state: not JSON.', { cause });
    }
  }
  const state = parseRoot(expectObject(value, ''));
  parsedStates.add(state);
  return state;
}

const parsedStates = new WeakSet<object>();

function parseRoot(root: Json): TargetState {
  if ('apps' in root) return parseFleet(root, undefined);
  if ('local' in root) return parseLegacy(expectObject(root['local'], 'local'));
  const keys = Object.keys(root);
  if (keys.length === 1) {
    const uuid = keys[0] as string;
    const fleet = root[uuid];
    if (isObject(fleet) && 'apps' in fleet) return parseFleet(fleet, uuid);
  }
  throw invalid(
    '',
    keys.length > 1 && keys.every((k) => isObject(root[k]) && 'apps' in root[k])
      ? `holds ${keys.length} fleets (${keys.join(', ')}); give the state of one fleet.`
      : 'is neither a fleet state ({ [uuid]: { apps } } or { apps }) nor a v1 device state ({ local: { apps } }).',
  );
}

/**
 * Every image the state's releases reference, deduplicated, in order of first appearance (apps, then
 * releases, then services, in the file's key order). These are the images to preload. Host apps (`is_host`,
 * OS extensions) are left out unless `includeHostApps`: the OS installs them, not the data partition's engine.
 * Takes a parsed state or anything {@link parseTargetState} accepts.
 *
 * @example
 * ```ts
 * const preload = await resolvePreloadImages(imagesOfTargetState(state), { platform: 'linux/arm64', client })
 * ```
 */
export function imagesOfTargetState(input: unknown, options: { includeHostApps?: boolean } = {}): string[] {
  const state = parseTargetState(input);
  const seen = new Set<string>();
  if (state.kind === 'legacy-v1') {
    for (const app of Object.values(state.apps)) seen.add(app.image);
  } else {
    for (const app of Object.values(state.apps)) {
      // Host apps (OS extensions) are installed by the OS, not run by the engine of the data partition.
      if (app.is_host && !options.includeHostApps) continue;
      for (const release of Object.values(app.releases)) {
        for (const service of Object.values(release.services)) seen.add(service.image);
      }
    }
  }
  return [...seen];
}
