import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from './run.js';

/** A self-signed certificate for 127.0.0.1 and localhost, made with openssl, and its key. */
export interface LoopbackCertificate {
  /** Paths of the PEM files. */
  certificate: string;
  key: string;
  /** The certificate's PEM text: what a client trusts as its CA. */
  ca: string;
}

/** Writes a self-signed loopback certificate into `dir` (openssl, from REGISTRY_AUTH_TOOLS). */
export async function makeLoopbackCertificate(dir: string): Promise<LoopbackCertificate> {
  const certificate = join(dir, 'loopback.crt');
  const key = join(dir, 'loopback.key');
  await run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    '2',
    '-subj',
    '/CN=127.0.0.1',
    '-addext',
    'subjectAltName=IP:127.0.0.1,DNS:localhost',
    '-keyout',
    key,
    '-out',
    certificate,
  ]);
  return { certificate, key, ca: await readFile(certificate, 'utf8') };
}
