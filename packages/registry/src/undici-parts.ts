import { createRequire } from 'node:module';
import type { Agent as UndiciAgent, Dispatcher } from 'undici';

// undici's index loads all of undici (fetch, WebSocket, caches, mocks: ~110 modules), about half of the CLI's
// start-up before its first request; the transport needs its Agent and the request API only (~25 modules).
// The version is pinned in the workspace catalog, and every registry test goes through these two files.
const load = createRequire(import.meta.url);

/** undici's `Agent` (`undici/lib/dispatcher/agent.js`), loaded without the rest of undici. */
export const Agent = load('undici/lib/dispatcher/agent.js') as typeof UndiciAgent;

type RequestApi = (this: Dispatcher, options: Dispatcher.RequestOptions) => Promise<Dispatcher.ResponseData>;
const requestApi = load('undici/lib/api/api-request.js') as RequestApi;

/**
 * `request(url, { dispatcher, ... })` of undici: `dispatcher.request` without relying on the methods undici's
 * index adds to every dispatcher, so it works on an Agent loaded alone and on any dispatcher a caller passes.
 */
export function requestOn(
  dispatcher: Dispatcher,
  url: URL,
  options: Omit<Dispatcher.RequestOptions, 'origin' | 'path'>,
): Promise<Dispatcher.ResponseData> {
  return requestApi.call(dispatcher, {
    ...options,
    origin: url.origin,
    path: `${url.pathname}${url.search}`,
  });
}
