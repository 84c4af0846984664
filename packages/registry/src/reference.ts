import { EtchError } from '@etch/format';
import { assertDigest } from './digest.js';

/** The registry name docker uses for Docker Hub in references. */
export const DOCKER_HUB = 'docker.io';
/** Where Docker Hub serves the registry API. */
export const DOCKER_HUB_API_HOST = 'registry-1.docker.io';
/** The key Docker Hub credentials are stored under in `config.json` and sent to credential helpers. */
export const DOCKER_HUB_CREDENTIAL_KEY = 'https://index.docker.io/v1/';

const HUB_ALIASES = new Set([DOCKER_HUB, 'index.docker.io', DOCKER_HUB_API_HOST]);

/** A parsed, normalised image reference. */
export interface ImageReference {
  /** `docker.io` for Docker Hub, otherwise `host[:port]` as written (lower-cased host). */
  registry: string;
  /** Repository path inside the registry (`library/alpine`, `etch/a`). */
  repository: string;
  /** The tag, when the reference has one. A reference with neither tag nor digest means `latest`. */
  tag?: string;
  /** The pinned digest, when the reference has one. */
  digest?: string;
  /** What docker shows: `alpine`, `user/app`, `127.0.0.1:5000/etch/a`. */
  familiarName: string;
  /** `registry/repository`: `docker.io/library/alpine`. */
  fullName: string;
  /** The canonical form: `docker.io/library/alpine:3` or `…@sha256:…` (tag before digest when both are given). */
  toString(): string;
}

// distribution/reference grammar (reference/regexp.go), anchored piece by piece.
const DOMAIN_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const DOMAIN = new RegExp(`^(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?$`);
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const NAME_MAX = 255;
const HEX64 = /^[a-f0-9]{64}$/;

function usage(input: string, why: string): EtchError {
  return new EtchError('ETCH_USAGE', `Invalid image reference ${JSON.stringify(input)}: ${why}.`, {
    details: { reference: input },
  });
}

/** `docker.io` for any of Docker Hub's names, otherwise the host with its port, host part lower-cased. */
export function normalizeRegistry(registry: string): string {
  const lower = registry.toLowerCase();
  return HUB_ALIASES.has(lower) ? DOCKER_HUB : lower;
}

/** Builds an {@link ImageReference} from parts already validated. */
export function makeReference(registry: string, repository: string, tag?: string, digest?: string): ImageReference {
  const fullName = `${registry}/${repository}`;
  let familiarName = fullName;
  if (registry === DOCKER_HUB) {
    familiarName =
      repository.startsWith('library/') && repository.indexOf('/', 8) === -1 ? repository.slice(8) : repository;
  }
  const suffix = `${tag !== undefined ? `:${tag}` : ''}${digest !== undefined ? `@${digest}` : ''}`;
  return {
    registry,
    repository,
    ...(tag !== undefined ? { tag } : {}),
    ...(digest !== undefined ? { digest } : {}),
    familiarName,
    fullName,
    toString: () => `${fullName}${suffix}`,
  };
}

/**
 * Parses a docker image reference with docker's grammar and normalisation:
 * `alpine` → `docker.io/library/alpine`, `user/app:1` → `docker.io/user/app:1`,
 * `index.docker.io/x/y` and `registry-1.docker.io/x/y` → `docker.io/x/y`,
 * `127.0.0.1:5000/etch/a@sha256:…`, `localhost/app`, `[::1]:5000/app:tag@sha256:…`.
 * The first path component is a registry when it contains `.` or `:`, is `localhost`, or has upper-case letters.
 * Throws `ETCH_USAGE` on anything docker would refuse (upper-case repositories, bad tags, bad digests…).
 */
export function parseReference(input: string): ImageReference {
  if (typeof input !== 'string' || input === '') throw usage(String(input), 'it is empty');
  if (input !== input.trim() || /\s/.test(input)) throw usage(input, 'it contains white space');
  let rest = input;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at !== -1) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    try {
      assertDigest(digest, 'the digest');
    } catch (cause) {
      throw new EtchError(
        'ETCH_USAGE',
        `Invalid image reference ${JSON.stringify(input)}: ${(cause as Error).message}`,
        { cause },
      );
    }
  }
  let tag: string | undefined;
  // A tag follows the last ':' unless that ':' belongs to a host:port (then a '/' comes after it).
  const colon = rest.lastIndexOf(':');
  if (colon !== -1 && rest.indexOf('/', colon) === -1) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag))
      throw usage(
        input,
        `the tag ${JSON.stringify(tag)} is not valid (letters, digits, _ . -; at most 128; not starting with . or -)`,
      );
  }
  if (rest === '') throw usage(input, 'the repository name is missing');
  let registry = DOCKER_HUB;
  let path = rest;
  const slash = rest.indexOf('/');
  if (slash !== -1) {
    const first = rest.slice(0, slash);
    if (first.includes('.') || first.includes(':') || first === 'localhost' || first.toLowerCase() !== first) {
      if (!DOMAIN.test(first)) throw usage(input, `${JSON.stringify(first)} is not a valid registry host`);
      registry = normalizeRegistry(first);
      path = rest.slice(slash + 1);
    }
  }
  const components = path.split('/');
  for (const component of components) {
    if (component.toLowerCase() !== component) throw usage(input, 'repository names must be lower-case');
    if (!PATH_COMPONENT.test(component))
      throw usage(input, `${JSON.stringify(component)} is not a valid repository path component`);
  }
  if (registry === DOCKER_HUB && components.length === 1) {
    if (HEX64.test(path)) throw usage(input, 'a 64-character hex string is an image ID, not a repository name');
    path = `library/${path}`;
  }
  if (`${registry}/${path}`.length > NAME_MAX) throw usage(input, `the name is longer than ${NAME_MAX} characters`);
  return makeReference(registry, path, tag, digest);
}

/** The same reference with another tag or digest (both replaced: pass undefined to drop one). */
export function withTarget(ref: ImageReference, target: { tag?: string; digest?: string }): ImageReference {
  return makeReference(ref.registry, ref.repository, target.tag, target.digest);
}

/** `familiarName[:tag][@digest]`, the way docker prints a reference. */
export function familiarString(ref: ImageReference): string {
  return `${ref.familiarName}${ref.tag !== undefined ? `:${ref.tag}` : ''}${ref.digest !== undefined ? `@${ref.digest}` : ''}`;
}

/** The host the registry API is served from (`registry-1.docker.io` for Docker Hub). */
export function apiHostOf(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_API_HOST : registry;
}

/** Accepts a reference object or string. */
export function toReference(ref: ImageReference | string): ImageReference {
  return typeof ref === 'string' ? parseReference(ref) : ref;
}
