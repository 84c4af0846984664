// `@etch/registry/http`: the transport under the client, for packages that fetch more than registries
// (base images over HTTP) with the same retries, redirects, credential rules and resumable downloads.
export {
  HttpClient,
  DEFAULT_MIN_RATE,
  DEFAULT_RETRY,
  StalledBodyError,
  readBody,
  drain,
  contentRangeStart,
  header,
  isCutBodyError,
  isLoopbackHost,
  isReplayableBody,
  isTransientNetworkError,
  retryAfterMs,
  skipFirst,
  type HttpBody,
  type HttpMethod,
  type HttpOptions,
  type HttpRequest,
  type HttpResponse,
  type MinRate,
  type RetryPolicy,
} from './http.js';
export {
  discard,
  resumableGet,
  statusError,
  type ResumableGetOptions,
  type StatusErrorOptions,
} from './resumable-get.js';
export { verifiedBlob, type BlobOpener, type VerifiedBlobOptions } from './blob-stream.js';
