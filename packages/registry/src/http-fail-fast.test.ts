/** Which connection failures are worth another try, against real sockets: nothing is mocked. */
import { networkInterfaces } from 'node:os';
import { describe, expect, it } from 'vitest';
import { isEtchError, type Logger } from '@etch/format';
import { freePort } from '@etch/test-utils/system';
import { RegistryClient } from './registry-client.js';

/** A logger that keeps the messages it is given, to count retries. */
function recordingLogger(): Logger & { messages: string[] } {
  const messages: string[] = [];
  const keep = (message: string) => void messages.push(message);
  return { messages, debug: keep, info: keep, warn: keep };
}

async function failureOf(promise: Promise<unknown>): Promise<Error> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!isEtchError(error)) throw new Error(`expected an EtchError, got ${String(error)}`);
  return error;
}

/** This machine's first non-loopback IPv4 address: connecting to a closed port there is refused at once. */
function externalAddress(): string {
  for (const addresses of Object.values(networkInterfaces()))
    for (const address of addresses ?? []) if (address.family === 'IPv4' && !address.internal) return address.address;
  throw new Error('This test needs a network interface besides loopback (none found).');
}

describe('refused connections', () => {
  it('fail at once on loopback, HTTPS and then plain HTTP each tried once, naming what to check', async () => {
    const port = await freePort();
    const logger = recordingLogger();
    const client = new RegistryClient({
      dockerConfig: false,
      logger,
      retry: { attempts: 5, baseDelayMs: 1_000, maxDelayMs: 1_000 },
    });
    const started = Date.now();
    const error = await failureOf(client.resolve(`127.0.0.1:${port}/etch/x:1`));
    await client.close();
    expect(Date.now() - started, 'a refused loopback registry should fail without waiting').toBeLessThan(900);
    expect(error).toMatchObject({ code: 'ETCH_NETWORK' });
    expect(error.message).toContain('ECONNREFUSED');
    expect(error.message).toContain('Nothing accepts connections there');
    expect(logger.messages.filter((m) => m === 'retrying')).toEqual([]);
  });

  it('are retried on another host, but plain HTTP is not tried again on the port HTTPS found refusing', async () => {
    const host = `${externalAddress()}:${await freePort()}`;
    const logger = recordingLogger();
    const client = new RegistryClient({
      dockerConfig: false,
      logger,
      insecureRegistries: [host],
      retry: { attempts: 3, baseDelayMs: 10, maxDelayMs: 10 },
    });
    const error = await failureOf(client.resolve(`${host}/etch/x:1`));
    await client.close();
    expect(error.message).toContain('ECONNREFUSED');
    // Two retries of HTTPS (three tries), none of plain HTTP on the same address.
    expect(logger.messages.filter((m) => m === 'retrying')).toHaveLength(2);
  });
});

describe('names that do not resolve', () => {
  it('fail without retries and without advice about TLS or plain HTTP', async () => {
    const logger = recordingLogger();
    const client = new RegistryClient({ dockerConfig: false, logger, retry: { attempts: 5, baseDelayMs: 1_000 } });
    // .invalid never resolves (RFC 6761).
    const error = await failureOf(client.resolve('registry.etch.invalid/etch/x:1'));
    await client.close();
    expect(error.message).toContain('ENOTFOUND');
    expect(error.message).toContain('does not resolve');
    expect(error.message).not.toMatch(/CA|insecure/);
    expect(logger.messages.filter((m) => m === 'retrying')).toEqual([]);
  });
});
