import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { isEtchError } from '@etch/format';
import {
  appsJsonFor,
  formatAppsJson,
  validateAppsJson,
  type AppsJsonV1,
  type AppsJsonV2,
  type AppsJsonV3,
} from './apps-json.js';
import { imagesOfTargetState, parseTargetState } from './target-state.js';

function fixture(name: string): unknown {
  return JSON.parse(readFileSync(new URL(`./fixtures/${name}`, import.meta.url), 'utf8'));
}

const multi = fixture('fleet-state-multicontainer.json');
const single = fixture('fleet-state-single-container-no-uuid-key.json');
const legacy = fixture('device-state-v1-legacy.json');
const osV3 = fixture('os-apps-json-v3-host-extension.json');
const osV1 = fixture('os-apps-json-v1.json');

const FLEET = 'a1b2c3d4e5f60718293a4b5c6d7e8f90';
const SENSORS = 'registry2.balena-cloud.com/v2/8c3f0e2b1d4a5968a7b6c5d4e3f2a1b0@sha256:' + '1'.repeat(64);
const DASHBOARD = 'registry2.balena-cloud.com/v2/d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7@sha256:' + '2'.repeat(64);
const KIOSK = 'registry2.balena-cloud.com/v2/abc1230f9e8d7c6b5a49382716a5b4c3@sha256:' + '3'.repeat(64);
const HOST_EXT = 'registry2.balena-cloud.com/v2/77c1f5e8a4b34d2a9e0f1a2b3c4d5e6f@sha256:' + '4'.repeat(64);

/** The EtchError `fn` throws, checked for `ETCH_USAGE` and a message matching `pattern`. */
function usageError(fn: () => unknown, pattern: RegExp): void {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  expect(isEtchError(thrown, 'ETCH_USAGE'), String(thrown)).toBe(true);
  expect((thrown as Error).message).toMatch(pattern);
}

describe('appsJsonFor and the supervisor version', () => {
  it.each(['', 'latest', '14', 'v14.1.x', '14.1.2.3'])('refuses %j instead of guessing the format', (v) => {
    usageError(() => appsJsonFor(single, { supervisorVersion: v }), /Unknown supervisor version/);
  });
});

describe('parseTargetState', () => {
  it('reads a fleet state with the uuid key', () => {
    const state = parseTargetState(multi);
    expect(state).toMatchObject({ kind: 'fleet', uuid: FLEET, name: 'greenhouse' });
  });

  it('reads a fleet state without the uuid key, and from text', () => {
    const state = parseTargetState(JSON.stringify(single));
    expect(state.kind).toBe('fleet');
    expect(state).not.toHaveProperty('uuid');
  });

  it('gives the same apps.json with and without the uuid key', () => {
    const withKey = { 'fleet-uuid-0001': single };
    for (const supervisorVersion of ['6.6.0', '9.14.0', 'v14.11.2']) {
      expect(appsJsonFor(withKey, { supervisorVersion })).toEqual(appsJsonFor(single, { supervisorVersion }));
    }
  });

  it('fills omitted environment, labels, volumes, networks and config with {}', () => {
    const state = parseTargetState({
      apps: {
        u: {
          id: 1,
          name: 'a',
          releases: { c: { id: 2, services: { main: { id: 3, image_id: 4, image: 'alpine' } } } },
        },
      },
    });
    expect(state).toEqual({
      kind: 'fleet',
      config: {},
      apps: {
        u: {
          id: 1,
          name: 'a',
          releases: {
            c: {
              id: 2,
              volumes: {},
              networks: {},
              services: { main: { id: 3, image_id: 4, image: 'alpine', environment: {}, labels: {} } },
            },
          },
        },
      },
    });
  });

  it.each<[string, unknown, RegExp]>([
    ['not JSON', '{"apps": ', /not JSON/],
    ['null', null, /must be an object, found null/],
    ['an array', [1, 2], /must be an object, found an array/],
    ['an unrelated object', { hello: 'world' }, /neither a fleet state/],
    ['two fleets', { a: { apps: {} }, b: { apps: {} } }, /holds 2 fleets \(a, b\)/],
    ['apps not an object', { apps: [] }, /apps must be an object/],
    ['app without id', { apps: { u: { name: 'x', releases: {} } } }, /apps\.u\.id must be a non-negative integer id/],
    [
      'service without image',
      { apps: { u: { id: 1, name: 'x', releases: { c: { id: 2, services: { main: { id: 3, image_id: 4 } } } } } } },
      /apps\.u\.releases\.c\.services\.main\.image must be a non-empty string/,
    ],
    [
      'environment with a number',
      {
        apps: {
          u: {
            id: 1,
            name: 'x',
            releases: { c: { id: 2, services: { main: { id: 3, image_id: 4, image: 'a', environment: { N: 1 } } } } },
          },
        },
      },
      /environment\.N must be a string/,
    ],
    [
      'release without services',
      { F: { apps: { u: { id: 1, name: 'x', releases: { c: { id: 2 } } } } } },
      /F\.apps\.u\.releases\.c\.services must be an object/,
    ],
    ['config with an object', { apps: {}, config: { A: {} } }, /config\.A must be a string/],
    ['a v2 device state', { local: { apps: { '1': { services: {} } } } }, /v2 device state, which is not supported/],
  ])('refuses %s', (_what, input, pattern) => {
    usageError(() => parseTargetState(input), pattern);
    usageError(() => imagesOfTargetState(input), pattern);
    usageError(() => appsJsonFor(input, { supervisorVersion: '14.0.0' }), pattern);
  });

  it('keeps the cause when the text is not JSON', () => {
    try {
      parseTargetState('nope');
      expect.unreachable();
    } catch (err) {
      expect((err as Error).cause).toBeInstanceOf(SyntaxError);
    }
  });
});

describe('imagesOfTargetState', () => {
  it('lists each referenced image once, in order of appearance', () => {
    expect(imagesOfTargetState(multi)).toEqual([SENSORS, DASHBOARD]);
    expect(imagesOfTargetState(parseTargetState(single))).toEqual([KIOSK]);
    expect(imagesOfTargetState(legacy)).toEqual(['registry2.resin.io/kiosk/9a8b7c6d5e4f30211203f4e5d6c7b8a9']);
  });

  it('deduplicates across apps and releases', () => {
    const state = structuredClone(multi) as Record<string, { apps: Record<string, unknown> }>;
    const fleet = state[FLEET]!;
    const app = fleet.apps[FLEET] as { releases: Record<string, unknown> };
    app.releases['0000000000000000000000000000000a'] = {
      id: 2765431,
      services: {
        sensors: { id: 445501, image_id: 5566700, image: 'registry2.balena-cloud.com/v2/old@sha256:' + '0'.repeat(64) },
        dashboard: { id: 445502, image_id: 5566702, image: DASHBOARD },
      },
    };
    fleet.apps['block-uuid'] = {
      id: 5,
      name: 'block',
      class: 'block',
      releases: { r: { id: 6, services: { b: { id: 7, image_id: 8, image: SENSORS } } } },
    };
    expect(imagesOfTargetState(state)).toEqual([
      SENSORS,
      DASHBOARD,
      'registry2.balena-cloud.com/v2/old@sha256:' + '0'.repeat(64),
    ]);
  });

  it('is empty for a fleet with no release', () => {
    expect(imagesOfTargetState({ apps: { u: { id: 1, name: 'new', releases: {} } } })).toEqual([]);
  });
});

describe('appsJsonFor, multicontainer fleet state', () => {
  it('supervisor 14.x: v3, the fleet state without its name, plus pinDevice', () => {
    const json = appsJsonFor(multi, { supervisorVersion: 'v14.11.2' }) as AppsJsonV3;
    const fleet = (multi as Record<string, { name: string; config: unknown; apps: unknown }>)[FLEET]!;
    expect(json).toEqual({ apps: fleet.apps, config: fleet.config, pinDevice: false });
    expect(json).not.toHaveProperty('name');
    expect(validateAppsJson(json, 'v14.11.2')).toMatchObject({ format: 3, images: [SENSORS, DASHBOARD] });
  });

  it('supervisor 9.x: v2, apps by id, services by id with composition spread', () => {
    const json = appsJsonFor(multi, { supervisorVersion: '9.15.7', pinDevice: true }) as AppsJsonV2;
    expect(json).toEqual({
      pinDevice: true,
      config: {
        RESIN_SUPERVISOR_POLL_INTERVAL: '900000',
        BALENA_SUPERVISOR_LOCAL_MODE: '0',
        BALENA_HOST_CONFIG_gpu_mem: '64',
      },
      apps: {
        '1987654': {
          name: 'greenhouse',
          commit: '4f1c0b9ad2e84f3b8c7d6e5f4a3b2c1d',
          releaseId: 2765432,
          services: {
            '445501': {
              imageId: 5566701,
              serviceName: 'sensors',
              image: SENSORS,
              environment: { SAMPLE_RATE: '10', I2C_BUS: '1' },
              labels: { 'io.balena.features.kernel-modules': '1' },
              restart: 'always',
              privileged: true,
              devices: ['/dev/i2c-1:/dev/i2c-1'],
            },
            '445502': {
              imageId: 5566702,
              serviceName: 'dashboard',
              image: DASHBOARD,
              environment: { PORT: '80' },
              labels: {},
              restart: 'always',
              ports: ['80:80'],
              networks: ['frontend'],
              volumes: ['dashboard-data:/data'],
            },
            '445503': {
              imageId: 5566702,
              serviceName: 'dashboard-worker',
              image: DASHBOARD,
              environment: { ROLE: 'worker' },
              labels: { 'io.balena.update.strategy': 'kill-then-download' },
              restart: 'on-failure',
              command: ['node', 'worker.js'],
            },
          },
          volumes: { 'dashboard-data': {} },
          networks: { frontend: { driver: 'bridge' } },
        },
      },
    });
    expect(validateAppsJson(json, '9.15.7')).toMatchObject({ format: 2, images: [SENSORS, DASHBOARD] });
  });

  it('supervisor 6.x: refused, v1 runs single-container apps only', () => {
    usageError(
      () => appsJsonFor(multi, { supervisorVersion: 'v6.6.0' }),
      /has 3 services; supervisor v6\.6\.0 \(< 7\.0\.0\) runs single-container apps only/,
    );
  });

  it('v1 and v2 refuse an app with several releases and host apps', () => {
    const twoReleases = {
      apps: { u: { id: 1, name: 'a', releases: { c1: { id: 2, services: {} }, c2: { id: 3, services: {} } } } },
    };
    usageError(
      () => appsJsonFor(twoReleases, { supervisorVersion: '9.0.0' }),
      /has 2 releases.*apps\.json v2 \(supervisor 9\.0\.0\) holds exactly one release/,
    );
    usageError(
      () => appsJsonFor({ apps: { u: { id: 1, name: 'a', releases: {} } } }, { supervisorVersion: '6.0.0' }),
      /has 0 releases/,
    );
    expect(appsJsonFor(twoReleases, { supervisorVersion: '14.0.0' })).toMatchObject({
      apps: { u: { releases: { c1: {}, c2: {} } } },
    });
    usageError(() => appsJsonFor(osV3, { supervisorVersion: '9.0.0' }), /is a host app; apps\.json v2/);
  });
});

describe('appsJsonFor, single-container fleet state', () => {
  it('supervisor 6.x: v1, an array with appId, imageId, commit, name, env, config', () => {
    const json = appsJsonFor(single, { supervisorVersion: '6.6.11' });
    expect(json).toEqual([
      {
        appId: '1234567',
        name: 'kiosk',
        commit: '9a8b7c6d5e4f30211203f4e5d6c7b8a9',
        releaseId: 987654,
        imageId: KIOSK,
        env: { URL: 'https://example.com', ROTATE: '90' },
        config: { RESIN_SUPERVISOR_POLL_INTERVAL: '600000', RESIN_HOST_CONFIG_disable_splash: '1' },
      },
    ] satisfies AppsJsonV1);
    expect(validateAppsJson(json, '6.6.11')).toMatchObject({ format: 1, images: [KIOSK] });
  });

  it('supervisor 9.x: v2', () => {
    const json = appsJsonFor(single, { supervisorVersion: 'v9.0.1' }) as AppsJsonV2;
    expect(Object.keys(json.apps)).toEqual(['1234567']);
    expect(json.apps['1234567']).toMatchObject({
      name: 'kiosk',
      commit: '9a8b7c6d5e4f30211203f4e5d6c7b8a9',
      releaseId: 987654,
    });
    expect(json.apps['1234567']!.services).toEqual({
      '334401': {
        imageId: 4455601,
        serviceName: 'main',
        image: KIOSK,
        environment: { URL: 'https://example.com', ROTATE: '90' },
        labels: { 'io.balena.features.dbus': '1' },
        restart: 'always',
        network_mode: 'host',
      },
    });
    expect(json.pinDevice).toBe(false);
  });

  it('supervisor 14.x: v3', () => {
    const json = appsJsonFor(single, { supervisorVersion: '14.0.0', pinDevice: true }) as AppsJsonV3;
    expect(json.pinDevice).toBe(true);
    expect(Object.keys(json.apps)).toEqual(['0f9e8d7c6b5a49382716a5b4c3d2e1f0']);
    expect(
      json.apps['0f9e8d7c6b5a49382716a5b4c3d2e1f0']!.releases['9a8b7c6d5e4f30211203f4e5d6c7b8a9']!.services['main']!
        .image,
    ).toBe(KIOSK);
  });

  it('does not share objects with the input', () => {
    const state = parseTargetState(structuredClone(single));
    const json = appsJsonFor(state, { supervisorVersion: '14.0.0' }) as AppsJsonV3;
    json.apps['0f9e8d7c6b5a49382716a5b4c3d2e1f0']!.name = 'changed';
    expect(state.kind === 'fleet' && state.apps['0f9e8d7c6b5a49382716a5b4c3d2e1f0']!.name).toBe('kiosk');
  });
});

describe('appsJsonFor, legacy v1 device state', () => {
  it('supervisor 6.x: the balena-preload v1 transform', () => {
    expect(appsJsonFor(legacy, { supervisorVersion: 'v6.6.0' })).toEqual([
      {
        appId: '1234567',
        name: 'kiosk',
        commit: '9a8b7c6d5e4f30211203f4e5d6c7b8a9',
        releaseId: 987654,
        imageId: 'registry2.resin.io/kiosk/9a8b7c6d5e4f30211203f4e5d6c7b8a9',
        env: { URL: 'https://example.com' },
        config: { RESIN_SUPERVISOR_POLL_INTERVAL: '600000', RESIN_HOST_CONFIG_gpu_mem: '128' },
      },
    ]);
  });

  it.each(['9.0.0', '14.1.0'])('supervisor %s: refused, the state cannot make v2/v3', (v) => {
    usageError(
      () => appsJsonFor(legacy, { supervisorVersion: v }),
      /v1 device state.*only makes apps\.json v1.*Give the v3 fleet state/,
    );
  });
});

describe('pinDevice', () => {
  it.each(['6.6.11', 'v1.0.0', '7.0.0-rc.1'])('is refused below 7 (%s), naming the version', (v) => {
    usageError(
      () => appsJsonFor(single, { supervisorVersion: v, pinDevice: true }),
      new RegExp(`only works with supervisor versions >= 7\\.0\\.0; this OS has supervisor ${v.replace(/\./g, '\\.')}`),
    );
  });

  it('false is fine below 7', () => {
    expect(appsJsonFor(single, { supervisorVersion: '6.6.11', pinDevice: false })).toHaveLength(1);
  });

  it('is written in v2 and v3', () => {
    expect(appsJsonFor(single, { supervisorVersion: '7.0.0', pinDevice: true })).toMatchObject({ pinDevice: true });
    expect(appsJsonFor(single, { supervisorVersion: '13.0.0', pinDevice: true })).toMatchObject({ pinDevice: true });
  });
});

describe('merge with the existing apps.json', () => {
  it('v3: keeps the OS host extension, adds the fleet, merges config', () => {
    const json = appsJsonFor(multi, { supervisorVersion: '14.11.2', existing: osV3, pinDevice: true }) as AppsJsonV3;
    expect(Object.keys(json.apps)).toEqual(['77c1f5e8a4b34d2a9e0f1a2b3c4d5e6f', FLEET]);
    expect(json.apps['77c1f5e8a4b34d2a9e0f1a2b3c4d5e6f']).toEqual(
      (osV3 as AppsJsonV3).apps['77c1f5e8a4b34d2a9e0f1a2b3c4d5e6f'],
    );
    expect(json.config).toEqual({
      BALENA_SUPERVISOR_POLL_INTERVAL: '900000',
      RESIN_SUPERVISOR_POLL_INTERVAL: '900000',
      BALENA_SUPERVISOR_LOCAL_MODE: '0',
      BALENA_HOST_CONFIG_gpu_mem: '64',
    });
    expect(json.pinDevice).toBe(true);
    expect(validateAppsJson(json).images).toEqual([HOST_EXT, SENSORS, DASHBOARD]);
  });

  it('v3: the new state replaces an app with the same uuid whole, and wins on config', () => {
    const existing = {
      apps: { [FLEET]: { id: 1987654, name: 'greenhouse', releases: { oldcommit: { id: 1, services: {} } } } },
      config: { BALENA_HOST_CONFIG_gpu_mem: '16', KEEP: 'me' },
      pinDevice: true,
      extra: 'kept',
    };
    const json = appsJsonFor(multi, { supervisorVersion: '14.0.0', existing: JSON.stringify(existing) }) as AppsJsonV3;
    expect(Object.keys(json.apps[FLEET]!.releases)).toEqual(['4f1c0b9ad2e84f3b8c7d6e5f4a3b2c1d']);
    expect(json.config['BALENA_HOST_CONFIG_gpu_mem']).toBe('64');
    expect(json.config['KEEP']).toBe('me');
    expect(json.pinDevice).toBe(false);
    expect(json['extra']).toBe('kept');
  });

  it('v2: keeps apps of other ids', () => {
    const existing = appsJsonFor(single, { supervisorVersion: '9.0.0' });
    const json = appsJsonFor(multi, { supervisorVersion: '9.0.0', existing }) as AppsJsonV2;
    expect(Object.keys(json.apps).sort()).toEqual(['1234567', '1987654']);
  });

  it('v1: keeps other entries in order, replaces the same appId in place', () => {
    const json = appsJsonFor(single, { supervisorVersion: '6.6.0', existing: osV1 }) as AppsJsonV1;
    expect(json.map((e) => [e.appId, e.name])).toEqual([
      ['7654321', 'provisioner'],
      ['1234567', 'kiosk'],
    ]);
    expect(json[1]!.imageId).toBe(KIOSK);
    const appended = appsJsonFor(single, {
      supervisorVersion: '6.6.0',
      existing: [(osV1 as AppsJsonV1)[0]],
    }) as AppsJsonV1;
    expect(appended.map((e) => e.appId)).toEqual(['7654321', '1234567']);
  });

  it.each([undefined, null, '', '  ', {}, []])('treats %j as nothing to keep', (existing) => {
    expect(appsJsonFor(single, { supervisorVersion: '14.0.0', existing })).toEqual(
      appsJsonFor(single, { supervisorVersion: '14.0.0' }),
    );
  });

  it('refuses an existing file in another format or malformed', () => {
    usageError(
      () => appsJsonFor(single, { supervisorVersion: '14.0.0', existing: osV1 }),
      /Cannot merge with the existing apps\.json: The apps\.json is in format v1, but supervisor 14\.0\.0 reads v3/,
    );
    usageError(
      () => appsJsonFor(single, { supervisorVersion: '6.0.0', existing: osV3 }),
      /Cannot merge.*format v3, but supervisor 6\.0\.0 reads v1/,
    );
    usageError(
      () => appsJsonFor(single, { supervisorVersion: '14.0.0', existing: '{"apps":' }),
      /Cannot merge.*not JSON/,
    );
  });
});

describe('validateAppsJson', () => {
  it('detects the format and lists images', () => {
    expect(validateAppsJson(osV1)).toMatchObject({
      format: 1,
      images: [
        'registry2.resin.io/provisioner/0123456789abcdef0123456789abcdef',
        'registry2.resin.io/kiosk/ffffffffffffffffffffffffffffffff',
      ],
    });
    expect(validateAppsJson(JSON.stringify(osV3))).toMatchObject({ format: 3, images: [HOST_EXT] });
    expect(validateAppsJson({ apps: {} }, '9.0.0').format).toBe(2);
    expect(validateAppsJson({ apps: {} }).format).toBe(3);
  });

  it('refuses a file the supervisor does not read', () => {
    usageError(() => validateAppsJson(osV3, '12.11.0'), /format v3, but supervisor 12\.11\.0 reads v2/);
    usageError(() => validateAppsJson(osV1, 'v13.0.0'), /format v1, but supervisor v13\.0\.0 reads v3/);
    usageError(() => validateAppsJson(osV1, 'soon'), /Unknown supervisor version/);
  });

  it.each<[string, unknown, RegExp]>([
    ['text that is not JSON', 'apps', /not JSON/],
    ['a number', 42, /must be an array \(v1\) or an object with apps/],
    ['an object without apps', { config: {} }, /apps must be an object/],
    ['a v1 entry without imageId', [{ appId: '1', env: {} }], /\[0\]\.imageId must be a non-empty image reference/],
    ['a v1 entry without appId', [{ imageId: 'x' }], /\[0\]\.appId must be an app id/],
    ['a v1 env with a number', [{ appId: 1, imageId: 'x', env: { A: 1 } }], /\[0\]\.env must be an object of strings/],
    [
      'an app with neither releases nor services',
      { apps: { a: { name: 'x' } } },
      /apps\.a has neither releases \(v3\) nor services \(v2\)/,
    ],
    ['mixed v2 and v3 apps', { apps: { a: { services: {} }, b: { id: 1, name: 'b', releases: {} } } }, /mixes v2 apps/],
    [
      'a v2 service without image',
      { apps: { '1': { services: { '2': { imageId: 3 } } } } },
      /apps\.1\.services\.2\.image must be a non-empty image reference/,
    ],
    [
      'a v3 service without image_id',
      { apps: { u: { id: 1, name: 'x', releases: { c: { id: 2, services: { s: { id: 3, image: 'a' } } } } } } },
      /Invalid apps\.json: apps\.u\.releases\.c\.services\.s\.image_id/,
    ],
    ['pinDevice as a string', { apps: {}, pinDevice: 'yes' }, /pinDevice must be a boolean/],
  ])('refuses %s', (_what, input, pattern) => {
    usageError(() => validateAppsJson(input), pattern);
  });
});

describe('formatAppsJson', () => {
  it('sorts keys and indents by 4, as balena-preload wrote it', () => {
    const text = formatAppsJson({ pinDevice: false, config: { B: '1', A: '2' }, apps: {} });
    expect(text).toBe(
      '{\n    "apps": {},\n    "config": {\n        "A": "2",\n        "B": "1"\n    },\n    "pinDevice": false\n}\n',
    );
    const json = appsJsonFor(multi, { supervisorVersion: '14.0.0' });
    expect(JSON.parse(formatAppsJson(json))).toEqual(json);
  });
});
