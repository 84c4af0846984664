import { EtchError } from '@etch/format';
import { pushScope } from './auth.js';
import { digestBytes } from './digest.js';
import { drain, header } from './http.js';
import { IMAGE_ACCEPT } from './media-types.js';
import { toReference, type ImageReference } from './reference.js';
import type { RegistryClient } from './registry-client.js';
import { writeError } from './registry-errors.js';

/** Options of {@link putManifest}. */
export interface PutManifestOptions {
  signal?: AbortSignal;
  /** Token scopes (default pull,push on the repository). */
  scopes?: readonly string[];
}

/**
 * Stores a manifest or index under the reference's tag, or its digest (`PUT /v2/<name>/manifests/<ref>`), with
 * exactly these bytes. The registry's `Docker-Content-Digest` must be the sha256 of the bytes sent; a registry
 * that answers another digest rewrote the document and the push fails with `ETCH_DIGEST_MISMATCH`. When it sends
 * none, the manifest is looked up by digest to prove the bytes are there. Returns the digest.
 */
export async function putManifest(
  client: RegistryClient,
  reference: ImageReference | string,
  manifest: { bytes: Uint8Array; mediaType: string },
  options: PutManifestOptions = {},
): Promise<string> {
  const ref = toReference(reference);
  const digest = digestBytes(manifest.bytes, ref.digest ?? 'sha256:');
  if (ref.digest !== undefined && ref.digest !== digest)
    throw new EtchError('ETCH_USAGE', `The manifest for ${ref.fullName}@${ref.digest} hashes to ${digest}.`, {
      details: { digest: ref.digest, actual: digest },
    });
  const target = ref.digest ?? ref.tag ?? 'latest';
  const what = `the manifest ${digest} as ${ref.fullName}${ref.digest ? '@' : ':'}${target}`;
  const scopes = options.scopes ?? [pushScope(ref.repository)];
  const signal = options.signal ? { signal: options.signal } : {};
  const response = await client.request(
    ref.registry,
    `${ref.repository}/manifests/${target}`,
    scopes,
    { method: 'PUT', headers: { 'content-type': manifest.mediaType }, body: manifest.bytes, write: true, ...signal },
    `storing ${what}`,
  );
  if (response.status === 401)
    return client.unauthorized(ref.registry, `storing ${what}`, response, options.signal, true);
  if (response.status < 200 || response.status >= 300)
    throw await writeError(response, `storing ${what}`, ref.registry);
  await drain(response);
  const said = header(response.headers, 'docker-content-digest');
  if (said !== undefined && said !== digest) {
    throw new EtchError(
      'ETCH_DIGEST_MISMATCH',
      `${ref.registry} stored ${what} as ${said}: it changed the document. The push is refused; pin ${digest} elsewhere or use a registry that keeps manifests as sent.`,
      { details: { digest, actual: said, registry: ref.registry } },
    );
  }
  if (said === undefined) {
    const check = await client.request(
      ref.registry,
      `${ref.repository}/manifests/${digest}`,
      scopes,
      { method: 'HEAD', headers: { accept: [manifest.mediaType, ...IMAGE_ACCEPT].join(', ') }, ...signal },
      `checking ${what}`,
    );
    await drain(check);
    if (check.status !== 200)
      throw new EtchError(
        'ETCH_DIGEST_MISMATCH',
        `${ref.registry} accepted ${what} but does not serve it by that digest (HTTP ${check.status}): it changed the document.`,
        { details: { digest, statusCode: check.status, registry: ref.registry } },
      );
  }
  return digest;
}

/**
 * Deletes a manifest by digest, or a blob (`DELETE /v2/<name>/manifests|blobs/<digest>`). Registries that do not
 * allow deletes answer `ETCH_UNSUPPORTED`; one that does not have it, `ETCH_NOT_FOUND`.
 */
export async function deleteFromRegistry(
  client: RegistryClient,
  reference: ImageReference | string,
  kind: 'manifests' | 'blobs',
  digest: string,
  options: { signal?: AbortSignal; scopes?: readonly string[] } = {},
): Promise<void> {
  const ref = toReference(reference);
  const what = `deleting ${kind === 'blobs' ? 'blob' : 'manifest'} ${digest} from ${ref.fullName}`;
  const response = await client.request(
    ref.registry,
    `${ref.repository}/${kind}/${digest}`,
    options.scopes ?? [`repository:${ref.repository}:delete`, pushScope(ref.repository)],
    { method: 'DELETE', write: true, ...(options.signal ? { signal: options.signal } : {}) },
    what,
  );
  if (response.status === 202 || response.status === 200 || response.status === 204) {
    await drain(response);
    return;
  }
  if (response.status === 401) return client.unauthorized(ref.registry, what, response, options.signal, true);
  throw await writeError(response, what, ref.registry);
}
