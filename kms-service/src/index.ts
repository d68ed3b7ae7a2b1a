export * from './client.js';
export { decide, RULES, ROLES, TRAINING_KINDS } from './policy.js';
export type {
  Action,
  DenyReason,
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
