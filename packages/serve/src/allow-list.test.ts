import { createServer } from 'node:http';
import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import { AllowList, isNonPublicAddress } from './allow-list.js';

describe('AllowList', () => {
  it('matches a host on any port, or host:port on that port only', () => {
    const allow = new AllowList(['ghcr.io', '127.0.0.1:5000', 'Registry.Example:443']);
    expect(allow.allowsHost('ghcr.io')).toBe(true);
    expect(allow.allowsHost('ghcr.io:8443')).toBe(true);
    expect(allow.allowsHost('127.0.0.1:5000')).toBe(true);
    expect(allow.allowsHost('127.0.0.1:5001'), 'another port of a host:port entry').toBe(false);
    expect(allow.allowsHost('registry.example:443'), 'case').toBe(true);
    expect(allow.allowsHost('evil.ghcr.io'), 'a subdomain').toBe(false);
    expect(allow.allowsHost('ghcr.io.evil.example'), 'a suffix').toBe(false);
  });

  it('knows which addresses are not public', () => {
    for (const address of [
      '127.0.0.1',
      '10.1.2.3',
      '172.20.0.1',
      '192.168.1.1',
      '169.254.169.254',
      '0.0.0.0',
      '::1',
      'fd00::1',
      'fe80::1',
      '::ffff:127.0.0.1',
    ])
      expect(isNonPublicAddress(address), address).toBe(true);
    for (const address of ['8.8.8.8', '140.82.112.3', '2606:4700::1111'])
      expect(isNonPublicAddress(address), address).toBe(false);
  });

  it('connects to a listed address, and refuses an unlisted one and a listed name resolving to loopback', async () => {
    const server = createServer((_req, res) => res.end('ok'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    const listed = new AllowList([`127.0.0.1:${port}`, `localhost:${port}`]).dispatcher();
    const unlisted = new AllowList(['127.0.0.1:1']).dispatcher();
    try {
      const ok = await request(`http://127.0.0.1:${port}/`, { dispatcher: listed });
      expect(await ok.body.text()).toBe('ok');
      await expect(request(`http://127.0.0.1:${port}/`, { dispatcher: unlisted })).rejects.toMatchObject({
        code: 'ETCH_DENIED',
      });
      await expect(
        request(`http://localhost:${port}/`, { dispatcher: listed }),
        'a name that resolves to loopback',
      ).rejects.toMatchObject({ code: 'ETCH_DENIED' });
    } finally {
      await listed.close();
      await unlisted.close();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
