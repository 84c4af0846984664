export { createTempDir, type TempDir } from './temp.js';
export { run, type RunOptions, type RunResult } from './run.js';
export { BASE_TOOLS, DISK_TOOLS, REGISTRY_AUTH_TOOLS, ensureTools, type RequiredTool } from './tools.js';
export { collect, craftTar, patternStream, rejectionOf, sha256Of, type CraftedEntry } from './archives.js';
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
export { startHttp10Server, type Http10Request, type Http10Server, type Http10ServerOptions } from './http10-server.js';
