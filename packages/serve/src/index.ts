export { startEtchServer, type EtchServer, type ServeOptions } from './server.js';
export { etchRequestSchema, type EtchRequest, type EtchRequestFile } from './request.js';
export { AllowList, isNonPublicAddress } from './allow-list.js';
export { BuildLimiter, QueueFullError } from './limiter.js';
export { ServeMetrics, type RequestOutcome } from './metrics.js';
export { planEtch, requestError, sharedBaseWarmer, type EtchPlan, type PlanContext } from './plan.js';
export {
  appsJsonText,
  etchOptionsFor,
  preloadImagesOption,
  preloadOrder,
  supervisorTagFor,
  tagSupervisor,
  type EtchChoices,
  type PreloadOrder,
} from './etch-options.js';
