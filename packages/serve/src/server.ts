import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import Fastify, { type FastifyBaseLogger, type FastifyError, type FastifyInstance } from 'fastify';
import { createEtch } from '@etch/core';
import { ConvertedLayerCache, StagePool } from '@etch/docker-store';
import { EtchError, ignoreRejection, isEtchError, type Logger } from '@etch/format';
import { BlobCache, RegistryClient } from '@etch/registry';
import { AllowList } from './allow-list.js';
import { BuildLimiter, QueueFullError } from './limiter.js';
import { ServeMetrics, type RequestOutcome } from './metrics.js';
import { planEtch, removeStaleStages, sharedBaseWarmer, stagePrefix } from './plan.js';
import { etchRequestSchema, type EtchRequest } from './request.js';

/** Options of {@link startEtchServer}; every limit has a default. */
export interface ServeOptions {
  /** Address to listen on (default `127.0.0.1`). */
  host?: string;
  /** Port (default 0: any free port; see {@link EtchServer.url}). */
  port?: number;
  /** Where `file:NAME` base images are; without it `file:` bases are refused. */
  baseDir?: string;
  /** Base images, layers and manifests are cached here (shared by every request). Required. */
  cacheDir: string;
  /** Bearer tokens accepted in `Authorization` (from `--token-file`). Required unless `auth` is false. */
  tokens?: readonly string[];
  /** `false` serves without tokens: only on a loopback address (default true). */
  auth?: boolean;
  /** Hosts (`host` or `host:port`) base URLs, ECI and image registries may be on. Default none. */
  allowHosts?: readonly string[];
  /** Pull-through mirrors by registry: `{ 'docker.io': 'http://mirror:5000' }`. Their hosts are allowed. */
  mirrors?: Readonly<Record<string, string>>;
  /** Registries reached over plain HTTP (loopback ones always may). */
  insecureRegistries?: readonly string[];
  /** docker's `config.json` for registry credentials (default `$DOCKER_CONFIG/config.json`, else `~/.docker`). */
  dockerConfig?: string;
  /** Builds at once (default 4). */
  maxConcurrent?: number;
  /** Requests waiting for a build beyond those (default 16); more get 503 with Retry-After. */
  maxQueue?: number;
  /** Seconds a 503 asks the client to wait (default 10). */
  retryAfterSeconds?: number;
  /** Largest request body in bytes (default 1 MiB). */
  bodyLimit?: number;
  /** A request's whole time, queue included, in ms (default 30 minutes); past it the stream is cut. */
  deadlineMs?: number;
  /** How long a client may read nothing while the server has bytes for it, in ms (default 60 s). */
  stallTimeoutMs?: number;
  /** How long {@link EtchServer.close} lets streams finish, in ms (default 30 s). */
  shutdownGraceMs?: number;
  /** `SOURCE_DATE_EPOCH` for entries etch makes itself, as `etch create` reads it (default the process's). */
  sourceDateEpoch?: string;
  /** pino options for the JSON log: `false` for none (default `{ level: 'info' }` on stdout). */
  log?: false | { level?: string; stream?: { write(line: string): void } };
}

/** A running server. */
export interface EtchServer {
  /** `http://host:port` it listens on. */
  url: string;
  metrics: ServeMetrics;
  /** The fastify instance (routes, hooks, `inject` for tests). */
  app: FastifyInstance;
  /**
   * Graceful shutdown: new requests are refused at once (readyz fails), streams in flight may finish for
   * `graceMs` (default `shutdownGraceMs`), then are cut; resolves when everything is closed.
   */
  close(graceMs?: number): Promise<void>;
}

/** A blob cache that counts its hits and downloads for `/metrics`. */
class CountingBlobCache extends BlobCache {
  constructor(
    dir: string,
    private readonly metrics: ServeMetrics,
  ) {
    super(dir);
  }

  override async has(descriptor: { digest: string; size: number }): Promise<boolean> {
    const hit = await super.has(descriptor);
    if (hit) this.metrics.cacheHits.inc();
    return hit;
  }

  override writeThrough(
    descriptor: { digest: string },
    chunks: AsyncIterable<Buffer> | Iterable<Buffer>,
  ): AsyncGenerator<Buffer> {
    // Manifests are kept as they are fetched, handed over whole; downloads arrive as streams.
    if (!Array.isArray(chunks)) this.metrics.blobDownloads.inc();
    return super.writeThrough(descriptor, chunks);
  }
}

/** The HTTP status for an error, and the outcome it counts as. */
function statusOf(error: unknown): { status: number; outcome: RequestOutcome } {
  if (!isEtchError(error)) return { status: 500, outcome: 'server_error' };
  switch (error.code) {
    case 'ETCH_USAGE':
    case 'ETCH_UNSAFE_PATH':
    case 'ETCH_BAD_ENTRY':
    case 'ETCH_UNSUPPORTED':
      return { status: 400, outcome: 'client_error' };
    case 'ETCH_DENIED':
      return { status: 403, outcome: 'forbidden' };
    case 'ETCH_NOT_FOUND':
      return { status: 404, outcome: 'client_error' };
    case 'ETCH_PLATFORM_NOT_FOUND':
    case 'ETCH_BAD_DISK_IMAGE':
      return { status: 422, outcome: 'client_error' };
    case 'ETCH_AUTH_FAILED':
    case 'ETCH_NETWORK':
    case 'ETCH_DIGEST_MISMATCH':
    case 'ETCH_BAD_MANIFEST':
    case 'ETCH_UNSUPPORTED_MANIFEST':
      return { status: 502, outcome: 'upstream_error' };
    default:
      return { status: 500, outcome: 'server_error' };
  }
}

function digestOf(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
}

function loggerOf(log: FastifyBaseLogger): Logger {
  return {
    debug: (message, fields) => log.debug(fields ?? {}, message),
    info: (message, fields) => log.info(fields ?? {}, message),
    warn: (message, fields) => log.warn(fields ?? {}, message),
  };
}

const CONTENT_TYPES = { none: 'application/x-tar', gzip: 'application/gzip', zstd: 'application/zstd' } as const;

/**
 * Starts `etch serve`: `POST /v1/etch` streams the `.etch` that `etch create` would write for the same choices;
 * `GET /v1/schema` publishes the request schema; `/healthz`, `/readyz` and `/metrics` (Prometheus) for
 * operators. Built on fastify (its JSON-schema validation and pino logger); streams are written to the raw
 * response with backpressure, so a slow client slows only its own build.
 *
 * @example
 * ```ts
 * const server = await startEtchServer({ cacheDir: '/var/cache/etch', baseDir: '/srv/os', tokens: ['s3cret'] });
 * console.log(server.url); // http://127.0.0.1:41234
 * process.once('SIGTERM', () => void server.close());
 * ```
 */
export async function startEtchServer(options: ServeOptions): Promise<EtchServer> {
  const host = options.host ?? '127.0.0.1';
  const auth = options.auth ?? true;
  const tokens = (options.tokens ?? []).filter((token) => token !== '').map(digestOf);
  if (auth && tokens.length === 0)
    throw new EtchError(
      'ETCH_USAGE',
      'No bearer token given: pass a token file, or disable auth on a loopback address.',
    );
  if (!auth && !isLoopback(host))
    throw new EtchError('ETCH_USAGE', `Serving without tokens is only allowed on a loopback address, not ${host}.`);
  await removeStaleStages(options.cacheDir);
  const deadlineMs = options.deadlineMs ?? 30 * 60_000;
  const stallTimeoutMs = options.stallTimeoutMs ?? 60_000;
  const retryAfter = String(options.retryAfterSeconds ?? 10);
  const metrics = new ServeMetrics();
  const limiter = new BuildLimiter(options.maxConcurrent ?? 4, options.maxQueue ?? 16);
  const allow = new AllowList(options.allowHosts ?? []);
  const mirrors = options.mirrors ?? {};
  const connections = new AllowList([...allow.hosts, ...Object.values(mirrors).map((url) => new URL(url).host)]);
  const dispatcher = connections.dispatcher({ connections: 16 });
  const client = new RegistryClient({
    cache: new CountingBlobCache(`${options.cacheDir}/oci`, metrics),
    mirrors,
    dispatcher,
    insecureRegistries: options.insecureRegistries ?? [],
    userAgent: 'etch-serve',
    ...(options.dockerConfig !== undefined ? { dockerConfig: { path: options.dockerConfig } } : {}),
  });
  const mirrored = new Set(Object.keys(mirrors));
  /** Builds in flight: aborted when the shutdown grace runs out. */
  const active = new Set<{ abort(reason: RequestOutcome): void; done: Promise<void> }>();
  let closing = false;
  // Shared base downloads run until the server stops, whoever asked first.
  const lifetime = new AbortController();
  const warmBase = sharedBaseWarmer(lifetime.signal);
  // Layers converted once for concurrent requests that need them, removed when the last one is done.
  const stagePool = new StagePool({
    dir: join(options.cacheDir, 'oci', `${stagePrefix()}${process.pid}-shared`),
    onConversion: () => metrics.conversions.inc(),
  });

  const app = Fastify({
    logger:
      options.log === false
        ? false
        : { level: options.log?.level ?? 'info', ...(options.log?.stream ? { stream: options.log.stream } : {}) },
    bodyLimit: options.bodyLimit ?? 1024 * 1024,
    requestIdHeader: 'x-request-id',
    genReqId: () => randomUUID(),
    return503OnClosing: true,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: false, allErrors: false } },
  });
  // Converted layers outlive requests (and the server), beside the blobs they came from; damage is logged.
  const layerCache = new ConvertedLayerCache(join(options.cacheDir, 'oci', 'converted'), {
    logger: loggerOf(app.log),
  });

  app.setErrorHandler((error: FastifyError, request, reply) => {
    if (error.validation) {
      const first = error.validation[0];
      const extra = (first?.params as { additionalProperty?: string } | undefined)?.additionalProperty;
      const path = (first?.instancePath ?? '').replace(/^\//, '');
      const field = extra !== undefined ? (path ? `${path}/${extra}` : extra) : path || '(body)';
      const message = extra !== undefined ? `${field}: unknown field` : `${field}: ${first?.message ?? 'is not valid'}`;
      metrics.requests.inc({ outcome: 'client_error' });
      return reply.code(400).send({ error: { code: 'ETCH_USAGE', message, field } });
    }
    const status = error.statusCode ?? 500;
    metrics.requests.inc({ outcome: status < 500 ? 'client_error' : 'server_error' });
    if (status >= 500) request.log.error({ err: error }, 'request failed');
    const message =
      error.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || error instanceof SyntaxError
        ? 'the body is not valid JSON'
        : error.code === 'FST_ERR_CTP_BODY_TOO_LARGE'
          ? `the body is larger than ${options.bodyLimit ?? 1024 * 1024} bytes`
          : status < 500
            ? error.message
            : 'internal error';
    return reply
      .code(status)
      .send({ error: { code: status === 415 || status < 500 ? 'ETCH_USAGE' : 'ETCH_IO', message } });
  });

  app.addHook('onRequest', async (request, reply) => {
    if (!request.url.startsWith('/v1/') && !request.url.startsWith('/metrics')) return;
    if (!auth) return;
    const header = request.headers.authorization ?? '';
    const match = /^Bearer\s+(\S+)$/i.exec(header);
    const given = match ? digestOf(match[1] as string) : undefined;
    if (given === undefined || !tokens.some((token) => timingSafeEqual(token, given))) {
      metrics.requests.inc({ outcome: 'unauthorized' });
      return reply
        .code(401)
        .header('www-authenticate', 'Bearer realm="etch"')
        .send({ error: { code: 'ETCH_AUTH_FAILED', message: 'a valid bearer token is required' } });
    }
    return undefined;
  });

  app.get('/healthz', async () => ({ ok: true }));
  app.get('/readyz', async (_request, reply) =>
    closing ? reply.code(503).send({ ok: false, reason: 'shutting down' }) : { ok: true },
  );
  app.get('/metrics', async (_request, reply) => {
    metrics.activeStreams.set(limiter.active);
    metrics.queueLength.set(limiter.queued);
    return reply.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });
  app.get('/v1/schema', async () => etchRequestSchema);

  app.post<{ Body: EtchRequest }>('/v1/etch', { schema: { body: etchRequestSchema } }, async (request, reply) => {
    const started = performance.now();
    const log = request.log;
    const res = reply.raw;
    let outcome: RequestOutcome | undefined;
    const controller = new AbortController();
    const stop = (reason: RequestOutcome) => {
      if (outcome === undefined) outcome = reason;
      controller.abort(new EtchError('ETCH_ABORTED', `The request was stopped: ${reason}.`));
    };
    const deadline = setTimeout(() => stop('deadline'), deadlineMs);
    // A client that goes away stops its build at once (shared downloads others wait for carry on).
    let output: Transform | undefined;
    const onClose = () => {
      // A response closed by a failed build (its output destroyed with the error) is a cut, not a client gone.
      if (!res.writableFinished && !output?.errored) stop('disconnected');
    };
    res.on('close', onClose);
    let finish!: () => void;
    const entry = { abort: stop, done: new Promise<void>((resolve) => (finish = resolve)) };
    active.add(entry);
    let release: (() => void) | undefined;
    let bytes = 0;
    let watchdog: NodeJS.Timeout | undefined;
    const end = (result: RequestOutcome) => {
      const final = outcome ?? result;
      metrics.requests.inc({ outcome: final });
      metrics.duration.observe({ outcome: final }, (performance.now() - started) / 1000);
      log.info({ outcome: final, bytes, ms: Math.round(performance.now() - started) }, 'etch request done');
    };
    try {
      if (closing) {
        end('busy');
        return await reply
          .code(503)
          .header('retry-after', retryAfter)
          .send({
            error: { code: 'ETCH_ABORTED', message: 'the server is shutting down' },
          });
      }
      try {
        metrics.queueLength.set(limiter.queued + 1);
        release = await limiter.acquire(controller.signal);
      } catch (error) {
        if (!(error instanceof QueueFullError)) throw error;
        end('busy');
        return await reply
          .code(503)
          .header('retry-after', retryAfter)
          .send({
            error: { code: 'ETCH_ABORTED', message: 'every build slot is busy; try again later' },
          });
      } finally {
        metrics.queueLength.set(limiter.queued);
      }
      metrics.activeStreams.set(limiter.active);
      const plan = await planEtch(request.body, {
        ...(options.baseDir !== undefined ? { baseDir: options.baseDir } : {}),
        cacheDir: options.cacheDir,
        client,
        allow,
        mirrored,
        dispatcher,
        warmBase,
        stagePool,
        layerCache,
        ...(options.sourceDateEpoch !== undefined
          ? { sourceDateEpoch: options.sourceDateEpoch }
          : process.env['SOURCE_DATE_EPOCH'] !== undefined
            ? { sourceDateEpoch: process.env['SOURCE_DATE_EPOCH'] }
            : {}),
        signal: controller.signal,
        logger: loggerOf(log),
      });
      // From here on the status is sent: a failure can only cut the stream, which a client sees as incomplete
      // (no final chunk, no tar end), never as a complete .etch.
      reply.hijack();
      res.writeHead(200, {
        'content-type': CONTENT_TYPES[request.body.compression ?? 'none'],
        'content-disposition': `attachment; filename="${plan.fileName}"`,
        'x-request-id': String(request.id),
        'cache-control': 'no-store',
      });
      let first = true;
      const counter = (output = new Transform({
        transform(chunk: Buffer, _encoding, callback: TransformCallback) {
          if (first) {
            first = false;
            metrics.timeToFirstByte.observe((performance.now() - started) / 1000);
          }
          bytes += chunk.length;
          metrics.bytesOut.inc(chunk.length);
          callback(null, chunk);
        },
      }));
      // A reader that takes nothing for stallTimeoutMs while bytes wait for it is dropped.
      let flowing = Date.now();
      res.on('drain', () => (flowing = Date.now()));
      watchdog = setInterval(
        () => {
          if (!res.writableNeedDrain) flowing = Date.now();
          else if (Date.now() - flowing > stallTimeoutMs) stop('stalled');
        },
        Math.min(1000, Math.max(100, stallTimeoutMs / 4)),
      );
      const sending = pipeline(counter, res, { signal: controller.signal });
      ignoreRejection(sending, 'its failure is the build failure, or the abort, reported below');
      await createEtch({ ...plan.options, output: counter, signal: controller.signal });
      await sending;
      end('complete');
    } catch (error) {
      if (reply.sent || res.headersSent) {
        res.destroy();
        if (outcome === undefined) log.warn({ err: error }, 'stream cut after its start');
        end('truncated');
        return reply;
      }
      if (controller.signal.aborted && outcome !== undefined) {
        end(outcome);
        if (outcome === 'disconnected') return reply;
        return await reply
          .code(outcome === 'deadline' ? 504 : 503)
          .send({ error: { code: 'ETCH_ABORTED', message: `the request was stopped: ${outcome}` } });
      }
      const { status, outcome: result } = statusOf(error);
      end(result);
      if (status >= 500) log.warn({ err: error }, 'request failed');
      const details = isEtchError(error) ? (error.details as { field?: unknown } | undefined) : undefined;
      return await reply.code(status).send({
        error: {
          code: isEtchError(error) ? error.code : 'ETCH_IO',
          message: status === 500 && !isEtchError(error) ? 'internal error' : (error as Error).message,
          ...(typeof details?.field === 'string' ? { field: details.field } : {}),
        },
      });
    } finally {
      clearTimeout(deadline);
      if (watchdog) clearInterval(watchdog);
      res.off('close', onClose);
      release?.();
      metrics.activeStreams.set(limiter.active);
      active.delete(entry);
      finish();
    }
  });

  const address = await app.listen({ host, port: options.port ?? 0 });
  const shutdownGraceMs = options.shutdownGraceMs ?? 30_000;
  let closed: Promise<void> | undefined;
  return {
    url: address,
    metrics,
    app,
    close(graceMs = shutdownGraceMs) {
      closed ??= (async () => {
        closing = true;
        const stopped = app.close();
        const all = Promise.all([...active].map((build) => build.done));
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([all, new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)))]);
        clearTimeout(timer);
        for (const build of active) build.abort('deadline');
        lifetime.abort(new EtchError('ETCH_ABORTED', 'The server stopped.'));
        await all;
        await stopped;
        await stagePool.close();
        await client.close();
        await dispatcher.close();
      })();
      return closed;
    },
  };
}
