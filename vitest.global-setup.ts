import { BASE_TOOLS, DOCKERD_TOOLS, REGISTRY_SERVER_TOOLS, ensureTools } from '@etch/test-utils';

/**
 * Runs once before any test worker starts, so apt-get never runs twice at the same time.
 * Suites that need heavier tools (registry, dockerd) add them to the list in their own globalSetup.
 */
export default function setup(): void {
  ensureTools([...BASE_TOOLS, ...REGISTRY_SERVER_TOOLS, ...DOCKERD_TOOLS]);
}
