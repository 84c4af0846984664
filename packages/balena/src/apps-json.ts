import { EtchError, isEtchError } from '@etch/format';
import { appsJsonFormatFor, parseSupervisorVersion, type AppsJsonFormat } from './supervisor-version.js';
import { parseApp, parseTargetState, type StringMap, type TargetApp, type TargetState } from './target-state.js';

/** One app of a v1 apps.json (supervisor < 7): a single-container app. */
export interface AppsJsonV1Entry {
  /** The app id, as a string (balena-preload wrote the `local.apps` key). */
  appId: string;
  /** The image reference (not a numeric id, despite the name). */
  imageId: string;
  /** Environment of the app's container. */
  env: StringMap;
  /** Device configuration. */
  config: StringMap;
  name?: string;
  commit?: string;
  releaseId?: number;
  [key: string]: unknown;
}

/** A v1 apps.json: an array of single-container apps. */
export type AppsJsonV1 = AppsJsonV1Entry[];

/** A service of a v2 apps.json app, keyed by service id; compose settings are spread into it. */
export interface AppsJsonV2Service {
  imageId: number;
  serviceName: string;
  image: string;
  environment: StringMap;
  labels: StringMap;
  [key: string]: unknown;
}

/** An app of a v2 apps.json (7 ≤ supervisor < 13), keyed by app id. */
export interface AppsJsonV2App {
  name: string;
  commit: string;
  releaseId: number;
  services: Record<string, AppsJsonV2Service>;
  volumes: Record<string, unknown>;
  networks: Record<string, unknown>;
  [key: string]: unknown;
}

/** A v2 apps.json. */
export interface AppsJsonV2 {
  apps: Record<string, AppsJsonV2App>;
  config: StringMap;
  pinDevice: boolean;
  [key: string]: unknown;
}

/** A v3 apps.json (supervisor ≥ 13): the fleet state without its name, plus `pinDevice`. */
export interface AppsJsonV3 {
  apps: Record<string, TargetApp>;
  config: StringMap;
  pinDevice: boolean;
  [key: string]: unknown;
}

/** Any apps.json format. */
export type AppsJson = AppsJsonV1 | AppsJsonV2 | AppsJsonV3;

/** Options for {@link appsJsonFor}. */
export interface AppsJsonOptions {
  /**
   * The version of the supervisor in the base OS (`v14.11.2`, `12.3.5+rev1`); it decides the format.
   * Required: an unparseable version is an `ETCH_USAGE` error, never a guess.
   */
  supervisorVersion: string;
  /**
   * Pin the device to the state's release. Written as `pinDevice` in v2 and v3; refused below
   * supervisor 7.0.0, where apps.json has no such field.
   * @default false
   */
  pinDevice?: boolean;
  /**
   * The base OS's own apps.json (parsed or text), to merge with rather than overwrite: entries
   * (apps) it has that the state does not are kept; the state wins on conflicts. `undefined`, `null`,
   * `''`, `{}` and `[]` mean nothing to keep.
   */
  existing?: unknown;
}

function usage(message: string, details: Record<string, unknown> = {}, cause?: unknown): EtchError {
  return new EtchError('ETCH_USAGE', message, cause === undefined ? { details } : { details, cause });
}

function singleRelease(app: TargetApp, appUuid: string, format: AppsJsonFormat, version: string) {
  const releases = Object.entries(app.releases);
  if (releases.length !== 1) {
    throw usage(
      `App ${app.name} (${appUuid}) has ${releases.length} releases in the target state; apps.json v${format} ` +
        `(supervisor ${version}) holds exactly one release per app.`,
      { appUuid, supervisorVersion: version },
    );
  }
  return releases[0] as [string, TargetApp['releases'][string]];
}

function refuseHost(app: TargetApp, appUuid: string, format: AppsJsonFormat, version: string): void {
  if (app.is_host === true) {
    throw usage(
      `App ${app.name} (${appUuid}) is a host app; apps.json v${format} (supervisor ${version}) cannot hold host apps. ` +
        'Give the fleet state, without the host OS app.',
      { appUuid, supervisorVersion: version },
    );
  }
}

function toV1(state: TargetState, version: string): AppsJsonV1 {
  if (state.kind === 'legacy-v1') {
    // balena-preload: { ...app minus environment/image/serviceId, appId, env: app.environment, imageId: app.image }
    return Object.entries(state.apps).map(([appId, app]) => {
      const { environment, image, serviceId: _serviceId, config, ...rest } = app;
      return {
        ...structuredClone(rest),
        appId,
        imageId: image,
        env: { ...environment },
        config: { ...(config ?? state.config) },
      };
    });
  }
  return Object.entries(state.apps).map(([appUuid, app]) => {
    refuseHost(app, appUuid, 1, version);
    const [commit, release] = singleRelease(app, appUuid, 1, version);
    const services = Object.values(release.services);
    if (services.length !== 1) {
      throw usage(
        `App ${app.name} (${appUuid}) has ${services.length} services; supervisor ${version} (< 7.0.0) runs single-container ` +
          'apps only (apps.json v1 has one image per app). Use an OS with supervisor 7 or later for multicontainer apps.',
        { appUuid, supervisorVersion: version },
      );
    }
    const service = services[0] as (typeof services)[number];
    return {
      appId: String(app.id),
      name: app.name,
      commit,
      releaseId: release.id,
      imageId: service.image,
      env: { ...service.environment },
      config: { ...state.config },
    };
  });
}

function toV2(state: TargetState, version: string, pinDevice: boolean): AppsJsonV2 {
  if (state.kind !== 'fleet') throw legacyOnly(version, 2);
  const apps: Record<string, AppsJsonV2App> = {};
  for (const [appUuid, app] of Object.entries(state.apps)) {
    refuseHost(app, appUuid, 2, version);
    const [commit, release] = singleRelease(app, appUuid, 2, version);
    const services: Record<string, AppsJsonV2Service> = {};
    for (const [serviceName, s] of Object.entries(release.services)) {
      services[String(s.id)] = {
        ...structuredClone(s.composition ?? {}),
        imageId: s.image_id,
        serviceName,
        image: s.image,
        environment: { ...s.environment },
        labels: { ...s.labels },
      };
    }
    apps[String(app.id)] = {
      name: app.name,
      commit,
      releaseId: release.id,
      services,
      volumes: structuredClone(release.volumes),
      networks: structuredClone(release.networks),
    };
  }
  return { apps, config: { ...state.config }, pinDevice };
}

function toV3(state: TargetState, version: string, pinDevice: boolean): AppsJsonV3 {
  if (state.kind !== 'fleet') throw legacyOnly(version, 3);
  return { apps: structuredClone(state.apps), config: { ...state.config }, pinDevice };
}

function legacyOnly(version: string, format: AppsJsonFormat): EtchError {
  return usage(
    `The target state is a v1 device state (local.apps), which only makes apps.json v1; supervisor ${version} reads v${format}. ` +
      'Give the v3 fleet state (GET /device/v3/fleet/:uuid/state).',
    { supervisorVersion: version },
  );
}

/**
 * Builds the supervisor's `apps.json` from a target state, in the format the supervisor version reads
 * (as balena-preload does):
 *
 * - **v1** (supervisor < 7.0.0): an array, one `{ appId, name, commit, releaseId, imageId, env, config }` per
 *   app; each app must have one release with one service (multicontainer is refused); `pinDevice` is refused.
 * - **v2** (7.0.0 ≤ supervisor < 13.0.0): `{ apps: { [appId]: { name, commit, releaseId, services: { [serviceId]:
 *   { …composition, imageId, serviceName, image, environment, labels } }, volumes, networks } }, config, pinDevice }`;
 *   one release per app.
 * - **v3** (supervisor ≥ 13.0.0): `{ apps, config, pinDevice }`, the fleet state without its name: apps by uuid with
 *   their releases by commit, as given.
 *
 * Host apps (`is_host`) are refused in v1 and v2, which cannot express them.
 *
 * @param state a state from {@link parseTargetState}, or anything it accepts.
 * @throws EtchError `ETCH_USAGE` for an unknown supervisor version, `pinDevice` below 7, a shape the format cannot
 *   hold, or an `existing` apps.json that is malformed or in another format.
 *
 * @example
 * ```ts
 * const state = parseTargetState(await readFile('state.json', 'utf8'))
 * const apps = appsJsonFor(state, { supervisorVersion: 'v14.11.2', existing: osAppsJson })
 * await writeFile('apps.json', formatAppsJson(apps))
 * ```
 */
export function appsJsonFor(state: unknown, options: AppsJsonOptions): AppsJson {
  const version = options.supervisorVersion;
  const format = appsJsonFormatFor(parseSupervisorVersion(version));
  const pinDevice = options.pinDevice ?? false;
  if (typeof pinDevice !== 'boolean') throw usage('pinDevice must be a boolean.');
  if (pinDevice && format === 1) {
    throw usage(`Pinning releases only works with supervisor versions >= 7.0.0; this OS has supervisor ${version}.`, {
      supervisorVersion: version,
    });
  }
  const parsed = parseTargetState(state);
  const generated =
    format === 1
      ? toV1(parsed, version)
      : format === 2
        ? toV2(parsed, version, pinDevice)
        : toV3(parsed, version, pinDevice);
  return options.existing === undefined ? generated : mergeAppsJson(options.existing, generated, version);
}

function isEmpty(value: unknown): boolean {
  if (value === undefined || value === null) return true;
  if (typeof value === 'string') return value.trim() === '';
  if (Array.isArray(value)) return value.length === 0;
  return typeof value === 'object' && Object.keys(value).length === 0;
}

/**
 * Merges a generated apps.json into an existing one (the base OS's): what `appsJsonFor` does with `existing`.
 *
 * - v1: existing entries whose `appId` the generated file does not have are kept, in their order; an entry with
 *   the same `appId` is replaced in place; new entries follow.
 * - v2/v3: `apps` are merged by key (app id / app uuid), a generated app replacing the existing one whole (its
 *   releases are not mixed with the old ones); `config` is merged key by key, generated values winning;
 *   `pinDevice` is the generated one; other top-level fields of the existing file are kept.
 *
 * @throws EtchError `ETCH_USAGE` when `existing` is malformed or in another format than `generated`.
 */
export function mergeAppsJson(existing: unknown, generated: AppsJson, supervisorVersion: string): AppsJson {
  if (isEmpty(existing)) return generated;
  let old: AppsJson;
  try {
    old = validateAppsJson(existing, supervisorVersion).appsJson;
  } catch (cause) {
    const message = isEtchError(cause) ? cause.message : String(cause);
    throw usage(`Cannot merge with the existing apps.json: ${message}`, { supervisorVersion }, cause);
  }
  if (Array.isArray(generated)) {
    const kept = (old as AppsJsonV1).map(
      (entry) => generated.find((g) => g.appId === String(entry.appId)) ?? structuredClone(entry),
    );
    const keptIds = new Set(kept.map((e) => String(e.appId)));
    return [...kept, ...generated.filter((g) => !keptIds.has(g.appId))];
  }
  const o = structuredClone(old) as AppsJsonV2 | AppsJsonV3;
  return {
    ...o,
    apps: { ...o.apps, ...generated.apps },
    config: { ...(o.config ?? {}), ...generated.config },
    pinDevice: generated.pinDevice,
  } as AppsJson;
}

/** What {@link validateAppsJson} found. */
export interface ValidatedAppsJson {
  /** The format of the file. An object with no apps fits v2 and v3: it reports the supervisor's, or 3. */
  format: AppsJsonFormat;
  /** The parsed file, unchanged. */
  appsJson: AppsJson;
  /** Every image it references, deduplicated, in order of appearance. */
  images: string[];
}

function invalidApps(field: string, message: string, cause?: unknown): EtchError {
  return usage(`Invalid apps.json: ${field ? `${field} ` : ''}${message}`, { field }, cause);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function checkStringMap(value: unknown, field: string, required: boolean): void {
  if (value === undefined && !required) return;
  if (!isObject(value) || Object.values(value).some((v) => typeof v !== 'string')) {
    throw invalidApps(field, 'must be an object of strings.');
  }
}

function checkImage(value: unknown, field: string): string {
  if (typeof value !== 'string' || value.trim() === '')
    throw invalidApps(field, 'must be a non-empty image reference.');
  return value.trim();
}

/**
 * Validates an apps.json given as is (`--apps-json FILE`) and lists the images it references.
 *
 * The format is read from the shape: an array is v1; an object whose apps have `releases` is v3, `services` v2.
 * With `supervisorVersion`, a file in another format than that supervisor reads is refused.
 *
 * @param json the parsed file, or its text.
 * @throws EtchError `ETCH_USAGE` naming the offending field, or the format mismatch.
 *
 * @example
 * ```ts
 * const { images } = validateAppsJson(await readFile('apps.json', 'utf8'), 'v14.11.2')
 * ```
 */
export function validateAppsJson(json: unknown, supervisorVersion?: string): ValidatedAppsJson {
  const wanted =
    supervisorVersion === undefined ? undefined : appsJsonFormatFor(parseSupervisorVersion(supervisorVersion));
  let value = json;
  if (typeof json === 'string' || Buffer.isBuffer(json)) {
    try {
      value = JSON.parse(json.toString());
    } catch (cause) {
      throw invalidApps('', 'is not JSON.', cause);
    }
  }
  const images = new Set<string>();
  let format: AppsJsonFormat;
  if (Array.isArray(value)) {
    format = 1;
    value.forEach((entry: unknown, i) => {
      const field = `[${i}]`;
      if (!isObject(entry)) throw invalidApps(field, 'must be an object.');
      const appId = entry['appId'];
      if (!(
        (typeof appId === 'string' && appId !== '') ||
        (typeof appId === 'number' && Number.isSafeInteger(appId))
      )) {
        throw invalidApps(`${field}.appId`, 'must be an app id.');
      }
      images.add(checkImage(entry['imageId'], `${field}.imageId`));
      checkStringMap(entry['env'], `${field}.env`, false);
      checkStringMap(entry['config'], `${field}.config`, false);
    });
  } else if (isObject(value)) {
    if (!isObject(value['apps'])) throw invalidApps('apps', 'must be an object (or the file an array, for v1).');
    checkStringMap(value['config'], 'config', false);
    if (value['pinDevice'] !== undefined && typeof value['pinDevice'] !== 'boolean')
      throw invalidApps('pinDevice', 'must be a boolean.');
    const kinds = new Set<AppsJsonFormat>();
    for (const [key, app] of Object.entries(value['apps'])) {
      const field = `apps.${key}`;
      if (!isObject(app)) throw invalidApps(field, 'must be an object.');
      if ('releases' in app) {
        kinds.add(3);
        let parsed: TargetApp;
        try {
          parsed = parseApp(app, field);
        } catch (cause) {
          throw invalidApps(
            '',
            isEtchError(cause) ? cause.message.replace(/^Invalid target state: /, '') : String(cause),
            cause,
          );
        }
        for (const release of Object.values(parsed.releases)) {
          for (const service of Object.values(release.services)) images.add(service.image);
        }
      } else if ('services' in app) {
        kinds.add(2);
        if (!isObject(app['services'])) throw invalidApps(`${field}.services`, 'must be an object.');
        for (const [id, service] of Object.entries(app['services'])) {
          if (!isObject(service)) throw invalidApps(`${field}.services.${id}`, 'must be an object.');
          images.add(checkImage(service['image'], `${field}.services.${id}.image`));
          checkStringMap(service['environment'], `${field}.services.${id}.environment`, false);
          checkStringMap(service['labels'], `${field}.services.${id}.labels`, false);
        }
      } else {
        throw invalidApps(field, 'has neither releases (v3) nor services (v2).');
      }
    }
    if (kinds.size > 1) throw invalidApps('apps', 'mixes v2 apps (services) and v3 apps (releases).');
    format = kinds.values().next().value ?? (wanted === 2 ? 2 : 3);
  } else {
    throw invalidApps('', 'must be an array (v1) or an object with apps (v2, v3).');
  }
  if (wanted !== undefined && format !== wanted) {
    throw usage(
      `The apps.json is in format v${format}, but supervisor ${supervisorVersion} reads v${wanted} ` +
        '(v1 below 7.0.0, v2 below 13.0.0, v3 from 13.0.0).',
      { supervisorVersion, format, expectedFormat: wanted },
    );
  }
  return { format, appsJson: value as AppsJson, images: [...images] };
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (!isObject(value)) return value;
  return Object.fromEntries(
    Object.keys(value)
      .sort()
      .map((k) => [k, sortKeys(value[k])]),
  );
}

/**
 * The text of an apps.json as balena-preload writes it: keys sorted, 4-space indentation, with a final newline,
 * so the same state always gives the same bytes.
 */
export function formatAppsJson(json: AppsJson): string {
  return `${JSON.stringify(sortKeys(json), null, 4)}\n`;
}
