import {
  BASE_TOOLS,
  DISK_TOOLS,
  DOCKERD_TOOLS,
  REGISTRY_AUTH_TOOLS,
  REGISTRY_SERVER_TOOLS,
  TERMINAL_TOOLS,
  ensureTools,
} from '@etch/test-utils/system';

/**
 * Runs once before any test worker starts, so apt-get never runs twice at the same time: every system tool
 * any suite needs is installed here, in one go.
 */
export default function setup(): void {
  ensureTools([
    ...BASE_TOOLS,
    ...DISK_TOOLS,
    ...REGISTRY_SERVER_TOOLS,
    ...REGISTRY_AUTH_TOOLS,
    ...DOCKERD_TOOLS,
    ...TERMINAL_TOOLS,
  ]);
}
