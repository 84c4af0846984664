// The half of the harness that needs more than Node: system commands, tools installed with apt-get, and the
// real servers (docker-registry, dockerd, auth fronts, the fault proxy). A test file that imports this module
// is an integration test: `pnpm test:unit` leaves it out (see vitest.config.ts).
export { run, type RunOptions, type RunResult } from './run.js';
export {
  BASE_TOOLS,
  DISK_TOOLS,
  REGISTRY_AUTH_TOOLS,
  TERMINAL_TOOLS,
  ensureTools,
  type RequiredTool,
} from './tools.js';
export { DOCKERD_TOOLS, startDockerd, type Dockerd, type DockerdOptions } from './dockerd.js';
export { REGISTRY_SERVER_TOOLS, freePort, startRegistryServer, type RegistryServer } from './docker-registry.js';
export {
  buildPreloadFixtures,
  pushFixture,
  readLayoutImage,
  type FixtureImage,
  type LayoutImage,
  type PreloadFixtures,
} from './engine-images.js';
export { makeBalenaLikeImage, type BalenaLikeImageOptions } from './disk-images.js';
export {
  startBasicAuthRegistry,
  type BasicAuthRegistry,
  type BasicAuthRegistryOptions,
} from './basic-auth-registry.js';
export {
  parseScope,
  startTokenAuthRegistry,
  type RecordedTokenRequest,
  type TokenAuthRegistry,
  type TokenAuthRegistryOptions,
  type TokenGrantRequest,
  type TokenScope,
} from './token-auth-registry.js';
export {
  startFaultProxy,
  type Fault,
  type FaultAction,
  type FaultProxy,
  type FaultProxyUpstream,
  type ProxiedRequest,
} from './fault-proxy.js';
export {
  buildRegistryFixtures,
  inspectPushed,
  pushRegistryFixture,
  type Descriptor,
  type FixturePlatform,
  type PushFixtureOptions,
  type PushedImage,
  type PushedManifest,
  type RegistryFixtures,
} from './registry-fixtures.js';
export { containerFingerprint, engineImageRows } from './engine-checks.js';
export { makeLoopbackCertificate, type LoopbackCertificate } from './tls.js';
export { pushOciArtifact, type ArtifactBlob } from './oci-artifacts.js';
export { gptWithEntries, overlappingMbr, plantExtentBomb } from './hostile-disks.js';
