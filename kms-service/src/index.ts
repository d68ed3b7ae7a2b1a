export * from './client.js';
export { decide, RULES, ROLES, TRAINING_KINDS, EGRESS_REVIEWER_ROLES } from './policy.js';
export * from './sdc/index.js';
export type {
  Action,
  DenyReason,
  EgressAction,
  EgressState,
  Decision,
  Role,
  TrainingKind,
  Subject,
  ProjectFacts,
} from './policy.js';
export { AuditVerifier, verifyAuditLines, entryHash, GENESIS_HASH } from './audit.js';
export type { AuditEntry, Checkpoint, VerifyResult } from './audit.js';
export { KmsServer } from './server.js';
export { loadConfig, type Config } from './config.js';
