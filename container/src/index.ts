export {
  JobAgent,
  collectPickup,
  containerEnv,
  createHubRelay,
  AGENT_SECRET_HEADER,
  PACKAGE_ROOT,
  type AgentOptions,
  type PickupConfig,
  type SessionSettings,
} from './agent.js';
export { AgentError } from './errors.js';
