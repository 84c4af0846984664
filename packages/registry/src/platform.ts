import { EtchError } from '@etch/format';

/** An OCI platform. `variant` is absent when it carries no information (amd64, arm64 v8). */
export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

function make(os: string, architecture: string, variant: string): Platform {
  return variant === '' ? { os, architecture } : { os, architecture, variant };
}

/**
 * containerd's normalisation (`platforms.Normalize`): lower-case; `x86_64`/`x86-64` → amd64 (v1 dropped);
 * `aarch64` → arm64 (8/v8/v8.0 dropped, 9 → v9); `armhf` → arm/v7; `armel` → arm/v6; `arm` → v7 by default
 * and `5`/`6`/`7`/`8` → `v5`…; `i386` → 386; `macos` → darwin.
 */
export function normalizePlatform(p: Platform): Platform {
  let os = (p.os ?? '').toLowerCase();
  let architecture = (p.architecture ?? '').toLowerCase();
  let variant = (p.variant ?? '').toLowerCase();
  if (os === 'macos') os = 'darwin';
  switch (architecture) {
    case 'i386':
      architecture = '386';
      variant = '';
      break;
    case 'x86_64':
    case 'x86-64':
    case 'amd64':
      architecture = 'amd64';
      if (variant === 'v1') variant = '';
      break;
    case 'aarch64':
    case 'arm64':
      architecture = 'arm64';
      if (variant === '8' || variant === 'v8' || variant === 'v8.0') variant = '';
      else if (variant === '9' || variant === '9.0' || variant === 'v9.0') variant = 'v9';
      break;
    case 'armhf':
      architecture = 'arm';
      variant = 'v7';
      break;
    case 'armel':
      architecture = 'arm';
      variant = 'v6';
      break;
    case 'arm':
      if (variant === '' || variant === '7') variant = 'v7';
      else if (variant === '5' || variant === '6' || variant === '8') variant = `v${variant}`;
      break;
  }
  return make(os, architecture, variant);
}

/**
 * Parses `os/architecture[/variant]` (`linux/arm/v6`, `linux/aarch64`), or a bare architecture (meaning linux).
 * The result is normalised. Throws `ETCH_USAGE` on anything else.
 */
export function parsePlatform(s: string): Platform {
  const parts = String(s).trim().split('/');
  if (parts.some((part) => part === '' || /[^A-Za-z0-9._-]/.test(part)) || parts.length > 3) {
    throw new EtchError(
      'ETCH_USAGE',
      `Invalid platform ${JSON.stringify(s)}: want os/architecture[/variant], e.g. linux/arm64 or linux/arm/v7.`,
    );
  }
  if (parts.length === 1) return normalizePlatform({ os: 'linux', architecture: parts[0] as string });
  return normalizePlatform({
    os: parts[0] as string,
    architecture: parts[1] as string,
    ...(parts[2] !== undefined ? { variant: parts[2] } : {}),
  });
}

/** `os/architecture[/variant]`. */
export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/** A platform given as an object or as a string. */
export function toPlatform(p: Platform | string): Platform {
  return typeof p === 'string' ? parsePlatform(p) : normalizePlatform(p);
}

/** True when both platforms are the same after normalisation. */
export function samePlatform(a: Platform, b: Platform): boolean {
  const x = normalizePlatform(a);
  const y = normalizePlatform(b);
  return x.os === y.os && x.architecture === y.architecture && (x.variant ?? '') === (y.variant ?? '');
}

// Older variants a CPU also runs, best first (containerd's platforms.Only). An ARMv6 device never gets v7.
const COMPATIBLE_VARIANTS: Readonly<Record<string, readonly string[]>> = {
  'arm/v8': ['v7', 'v6', 'v5'],
  'arm/v7': ['v6', 'v5'],
  'arm/v6': ['v5'],
  'amd64/v4': ['v3', 'v2', ''],
  'amd64/v3': ['v2', ''],
  'amd64/v2': [''],
};

/**
 * How well `candidate` serves `wanted`: 0 for an exact match, 1, 2… for older compatible variants, undefined
 * when it cannot run there.
 */
export function platformRank(wanted: Platform, candidate: Platform): number | undefined {
  const w = normalizePlatform(wanted);
  const c = normalizePlatform(candidate);
  if (w.os !== c.os || w.architecture !== c.architecture) return undefined;
  const wv = w.variant ?? '';
  const cv = c.variant ?? '';
  if (wv === cv) return 0;
  const older = COMPATIBLE_VARIANTS[`${w.architecture}/${wv}`];
  const at = older?.indexOf(cv) ?? -1;
  return at === -1 ? undefined : at + 1;
}

/**
 * The platform of this machine for Linux images (docker does the same on macOS and Windows hosts): `linux` and
 * the CPU architecture Node was built for. On 32-bit ARM the variant comes from Node's build (`arm_version`).
 * Callers that prepare an image for another device must pass that device's platform instead.
 */
export function hostPlatform(): Platform {
  const arch: Record<string, string> = {
    x64: 'amd64',
    ia32: '386',
    arm64: 'arm64',
    arm: 'arm',
    ppc64: 'ppc64le',
    s390x: 's390x',
    riscv64: 'riscv64',
  };
  const architecture = arch[process.arch] ?? process.arch;
  if (architecture !== 'arm') return { os: 'linux', architecture };
  const reported = (process.config.variables as Record<string, unknown>)['arm_version'];
  const version = typeof reported === 'string' || typeof reported === 'number' ? String(reported) : '7';
  return normalizePlatform({ os: 'linux', architecture, variant: version });
}
