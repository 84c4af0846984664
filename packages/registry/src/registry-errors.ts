import { EtchError } from '@etch/format';
import { readBody, type HttpResponse } from './http.js';

/** One entry of a registry's `{"errors": [...]}` answer (distribution-spec error codes). */
export interface RegistryError {
  code?: string;
  message?: string;
}

/**
 * Reads a body into memory, refusing more than `limit` bytes (`ETCH_BAD_MANIFEST`) or a body slower than the
 * client's minimum rate (`ETCH_NETWORK`, see {@link readBody}).
 */
export async function readLimited(response: HttpResponse, limit: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of readBody(response, what)) {
    length += chunk.length;
    if (length > limit) {
      response.body.destroy();
      throw new EtchError('ETCH_BAD_MANIFEST', `${what} is larger than ${limit} bytes; refusing to read it.`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** The `errors` a registry sent with a failure (empty when the body is not the spec's JSON). */
export async function registryErrors(response: HttpResponse): Promise<RegistryError[]> {
  try {
    const text = (await readLimited(response, 64 * 1024, 'error')).toString('utf8');
    const json = JSON.parse(text) as { errors?: RegistryError[] };
    return Array.isArray(json.errors) ? json.errors : [];
  } catch {
    return [];
  }
}

/**
 * The typed error for a write the registry refused, from its status and error codes: `ETCH_DENIED` (DENIED,
 * 403), `ETCH_UNSUPPORTED` (UNSUPPORTED, 405), `ETCH_NOT_FOUND` (BLOB_UNKNOWN, NAME_UNKNOWN, MANIFEST_BLOB_UNKNOWN,
 * BLOB_UPLOAD_UNKNOWN, 404), `ETCH_DIGEST_MISMATCH` (DIGEST_INVALID, SIZE_INVALID), `ETCH_BAD_MANIFEST`
 * (MANIFEST_INVALID…), else `ETCH_NETWORK`. `details.registryCodes` keeps what the registry said.
 */
export async function writeError(response: HttpResponse, what: string, registry: string): Promise<EtchError> {
  const errors = await registryErrors(response);
  const codes = errors.map((e) => e.code).filter((c): c is string => typeof c === 'string');
  const status = response.status;
  const said = `HTTP ${status}${codes.length ? `, ${codes.join(', ')}` : ''}`;
  const first = errors.find((e) => e.message)?.message;
  const details = { statusCode: status, registry, registryCodes: codes };
  const has = (...wanted: string[]) => wanted.some((w) => codes.includes(w));
  if (has('DENIED') || status === 403)
    return new EtchError('ETCH_DENIED', `${registry} does not allow ${what} (${said}).`, { details });
  if (has('UNSUPPORTED') || status === 405)
    return new EtchError('ETCH_UNSUPPORTED', `${registry} does not support ${what} (${said}).`, { details });
  if (has('BLOB_UNKNOWN', 'MANIFEST_BLOB_UNKNOWN'))
    return new EtchError('ETCH_NOT_FOUND', `${what} refers to a blob ${registry} does not have (${said}).`, {
      details,
    });
  if (has('NAME_UNKNOWN'))
    return new EtchError('ETCH_NOT_FOUND', `${what}: the repository does not exist (${said}).`, { details });
  if (has('BLOB_UPLOAD_UNKNOWN', 'BLOB_UPLOAD_INVALID') || status === 404)
    return new EtchError('ETCH_NOT_FOUND', `${what}: ${registry} no longer knows this upload (${said}).`, {
      details,
    });
  if (has('DIGEST_INVALID', 'SIZE_INVALID'))
    return new EtchError(
      'ETCH_DIGEST_MISMATCH',
      `${registry} refused ${what}: the bytes it received do not match the digest or size (${said}).`,
      { details },
    );
  if (has('MANIFEST_INVALID', 'MANIFEST_UNVERIFIED', 'TAG_INVALID', 'NAME_INVALID'))
    return new EtchError(
      'ETCH_BAD_MANIFEST',
      `${registry} refused ${what} as invalid (${said}${first ? `: ${first}` : ''}).`,
      { details },
    );
  return new EtchError('ETCH_NETWORK', `${what} failed with ${said}.`, { details });
}
