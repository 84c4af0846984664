export {
  appsJsonFor,
  formatAppsJson,
  mergeAppsJson,
  validateAppsJson,
  type AppsJson,
  type AppsJsonOptions,
  type AppsJsonV1,
  type AppsJsonV1Entry,
  type AppsJsonV2,
  type AppsJsonV2App,
  type AppsJsonV2Service,
  type AppsJsonV3,
  type ValidatedAppsJson,
} from './apps-json.js';
export {
  imagesOfTargetState,
  parseTargetState,
  type FleetTargetState,
  type LegacyTargetApp,
  type LegacyTargetState,
  type StringMap,
  type TargetApp,
  type TargetRelease,
  type TargetService,
  type TargetState,
} from './target-state.js';
export {
  appsJsonFormatFor,
  compareSupervisorVersions,
  parseSupervisorVersion,
  type AppsJsonFormat,
  type SupervisorVersion,
} from './supervisor-version.js';
