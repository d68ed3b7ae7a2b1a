export {
  JobAgent,
  collectPickup,
  containerEnv,
  createHubRelay,
  KMS_RELAY_PREFIX,
  AGENT_SECRET_HEADER,
  PACKAGE_ROOT,
  type AgentOptions,
  type PickupConfig,
  type SessionSettings,
} from './agent.js';
export { AgentError } from './errors.js';
export { cipherDirOf, TrefsMount, isMounted, keyInput, type TrefsSettings } from './trefs-mount.js';
