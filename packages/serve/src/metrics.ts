import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** How a request ended, as `etch_requests_total{outcome}` counts it. */
export type RequestOutcome =
  | 'complete'
  | 'client_error'
  | 'unauthorized'
  | 'forbidden'
  | 'busy'
  | 'upstream_error'
  | 'server_error'
  | 'disconnected'
  | 'stalled'
  | 'deadline'
  | 'truncated';

/** The server's Prometheus metrics, in a registry of its own (never the global one). */
export class ServeMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({
    name: 'etch_requests_total',
    help: 'POST /v1/etch requests by how they ended',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  readonly bytesOut = new Counter({
    name: 'etch_bytes_out_total',
    help: '.etch bytes written to clients',
    registers: [this.registry],
  });
  readonly activeStreams = new Gauge({
    name: 'etch_active_streams',
    help: 'builds running now',
    registers: [this.registry],
  });
  readonly queueLength = new Gauge({
    name: 'etch_queue_length',
    help: 'requests waiting for a build slot',
    registers: [this.registry],
  });
  readonly cacheHits = new Counter({
    name: 'etch_blob_cache_hits_total',
    help: 'blob lookups answered from the cache (no registry request)',
    registers: [this.registry],
  });
  readonly blobDownloads = new Counter({
    name: 'etch_blob_downloads_total',
    help: 'blobs downloaded from a registry into the cache',
    registers: [this.registry],
  });
  readonly conversions = new Counter({
    name: 'etch_layer_conversions_total',
    help: 'layers converted into the shared stage (concurrent requests for one layer share one conversion)',
    registers: [this.registry],
  });
  readonly timeToFirstByte = new Histogram({
    name: 'etch_time_to_first_byte_seconds',
    help: 'from the request to the first .etch byte',
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly duration = new Histogram({
    name: 'etch_request_duration_seconds',
    help: 'from the request to its end, by outcome',
    labelNames: ['outcome'] as const,
    buckets: [0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600],
    registers: [this.registry],
  });

  constructor() {
    // Resident memory and open file descriptors, among others (process_resident_memory_bytes, process_open_fds).
    collectDefaultMetrics({ register: this.registry });
  }
}
