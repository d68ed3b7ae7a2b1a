export { createApp, OPENAPI_PATH, type AppOptions } from './app.js';
export { loadConfig, parseConfig, readApiToken, type BridgeConfig } from './config.js';
export * from './errors.js';
export type { Executor, JobInfo, JobRef, JobStatus, SubmitResult } from './executors/executor.js';
export { LocalExecutor, type LocalOptions } from './executors/local.js';
export {
  SlurmExecutor,
  mapSlurmState,
  parseSbatchOutput,
  type SlurmOptions,
} from './executors/slurm.js';
export { FilePolicy, type PolicyFacts } from './file-policy.js';
export { Gateway, AGENT_SECRET_HEADER } from './gateway.js';
export { KmsPolicy } from './kms-policy.js';
export { BridgeMetrics } from './metrics.js';
export { PickupStore, PickupError } from './pickup.js';
export type { PolicyClient, PolicyRequest, ProjectChoice, SpawnDecision } from './policy.js';
export { createLogger, startBridge, REDACT_PATHS, type RunningBridge } from './server.js';
export {
  BridgeService,
  DEFAULT_RESOURCES,
  jobName,
  type ResourceLimits,
  type SessionOptions,
  type SessionView,
  type StartRequest,
} from './service.js';
export { SessionStore, type SessionRecord, type SessionState } from './store.js';
export { BatchTemplate, DEFAULT_TEMPLATE_PATH, shellQuote } from './template.js';
