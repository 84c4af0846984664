import { lookup, type LookupAddress, type LookupAllOptions } from 'node:dns';
import { BlockList, isIP, type LookupFunction } from 'node:net';
import { Agent, buildConnector, type Dispatcher } from 'undici';
import { EtchError } from '@etch/format';

/**
 * The hosts a server may contact on a client's behalf: `host` (any port) or `host:port`, as the operator lists
 * them. A public endpoint must not become a proxy into the operator's network, so a base image URL, an ECI
 * reference or an image registry outside the list is refused before any work, and every connection the server
 * makes goes through {@link AllowList.dispatcher}, which refuses the rest again (after redirects too).
 */
export class AllowList {
  private readonly entries: Set<string>;

  /** @param hosts `host` or `host:port` entries, compared without case. */
  constructor(hosts: Iterable<string>) {
    this.entries = new Set([...hosts].map((host) => host.trim().toLowerCase()).filter((host) => host !== ''));
  }

  /** Whether `hostname` on `port` may be contacted. */
  allows(hostname: string, port?: number | string): boolean {
    const name = hostname.toLowerCase().replace(/^\[(.*)\]$/, '$1');
    return this.entries.has(name) || (port !== undefined && port !== '' && this.entries.has(`${name}:${port}`));
  }

  /** Whether `host` (`name` or `name:port`, as a URL's `host` or an image reference's registry) may be contacted. */
  allowsHost(host: string): boolean {
    const match = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(host);
    if (!match) return false;
    return this.allows(match[1] as string, match[2]);
  }

  /** The entries, as given (lowercased). */
  get hosts(): string[] {
    return [...this.entries];
  }

  /**
   * An undici dispatcher that connects only to listed hosts, and to a name only when every address it resolves
   * to is public: a listed name that resolves to loopback, a private or a link-local address (DNS rebinding)
   * is refused. A private registry is listed by its IP address, which is then taken as meant.
   */
  dispatcher(options: { connections?: number; ca?: string | Buffer | (string | Buffer)[] } = {}): Dispatcher {
    // undici hands options it does not know to net.connect / tls.connect: `lookup` among them.
    const connector = buildConnector({
      lookup: publicOnlyLookup,
      ...(options.ca ? { ca: options.ca } : {}),
    });
    return new Agent({
      connections: options.connections ?? 8,
      keepAliveTimeout: 30_000,
      allowH2: false,
      connect: (connectOptions, callback) => {
        const port = connectOptions.port || (connectOptions.protocol === 'https:' ? '443' : '80');
        if (!this.allows(connectOptions.hostname, port)) {
          callback(refused(connectOptions.hostname, port), null);
          return;
        }
        connector(connectOptions, callback);
      },
    });
  }
}

function refused(hostname: string, port: string): EtchError {
  return new EtchError(
    'ETCH_DENIED',
    `${hostname}:${port} is not on the server's allow-list (--allow-host), so it is not contacted.`,
    { details: { host: `${hostname}:${port}` } },
  );
}

const nonPublic = new BlockList();
for (const [network, prefix] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.168.0.0', 16],
  ['224.0.0.0', 3],
] as const)
  nonPublic.addSubnet(network, prefix, 'ipv4');
for (const [network, prefix] of [
  ['::', 127],
  ['fc00::', 7],
  ['fe80::', 10],
  ['ff00::', 8],
] as const)
  nonPublic.addSubnet(network, prefix, 'ipv6');

/** True for an address that is not on the public internet (loopback, private, link-local, unspecified, multicast). */
export function isNonPublicAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 0) return true;
  if (family === 6) {
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
    if (mapped) return nonPublic.check(mapped[1] as string, 'ipv4');
    return nonPublic.check(address, 'ipv6');
  }
  return nonPublic.check(address, 'ipv4');
}

/** `dns.lookup` that fails for a name resolving to any non-public address. */
const publicOnlyLookup: LookupFunction = (hostname, options, callback) => {
  lookup(hostname, { ...options, all: true } as LookupAllOptions, (error, addresses: LookupAddress[]) => {
    if (error) return callback(error, '', 0);
    const bad = addresses.find((entry) => isNonPublicAddress(entry.address));
    if (bad) {
      const refusal = new EtchError(
        'ETCH_DENIED',
        `${hostname} resolves to ${bad.address}, a non-public address; list that address itself to allow it.`,
        { details: { host: hostname } },
      );
      return callback(refusal, '', 0);
    }
    if ((options as { all?: boolean }).all)
      return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, addresses);
    const first = addresses[0] as LookupAddress;
    return callback(null, first.address, first.family);
  });
};
