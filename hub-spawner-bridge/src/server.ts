/** Puts the bridge together from its configuration: API, gateway, executor, policy, state. */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import pino, { type Logger } from 'pino';
import { createApp } from './app.js';
import { readApiToken, type BridgeConfig } from './config.js';
import { ConfigError } from './errors.js';
import type { Executor } from './executors/executor.js';
import { LocalExecutor } from './executors/local.js';
import { SlurmExecutor } from './executors/slurm.js';
import { FilePolicy } from './file-policy.js';
import { Gateway } from './gateway.js';
import { KmsPolicy } from './kms-policy.js';
import { BridgeMetrics } from './metrics.js';
import type { PolicyClient } from './policy.js';
import { BridgeService } from './service.js';
import { SessionStore } from './store.js';
import { BatchTemplate } from './template.js';

/** Fields that may carry secrets are never logged, whatever a log call passes. */
export const REDACT_PATHS = [
  'passphrase',
  'token',
  'kek',
  'key',
  'env',
  'userToken',
  '*.passphrase',
  '*.token',
  '*.kek',
  '*.env',
  'req.headers.authorization',
];

export function createLogger(level: string): Logger {
  return pino({ level, redact: { paths: REDACT_PATHS, censor: '[redacted]' } });
}

export interface RunningBridge {
  api: AddressInfo;
  gateway: AddressInfo;
  service: BridgeService;
  close(): Promise<void>;
}

function makeExecutor(c: BridgeConfig, logDir: string): Executor {
  if (c.executor === 'local') return new LocalExecutor({ logDir });
  return new SlurmExecutor(c.slurm);
}

function makePolicy(c: BridgeConfig): PolicyClient {
  if (c.policy.file) return new FilePolicy(c.policy.file);
  if (c.policy.kmsUrl) return new KmsPolicy({ baseUrl: c.policy.kmsUrl });
  throw new ConfigError('no policy configured');
}

export async function startBridge(
  c: BridgeConfig,
  logger = createLogger(c.logLevel),
): Promise<RunningBridge> {
  const apiToken = readApiToken(c.apiTokenFile);
  const logDir = c.logDir ?? tmpdir();
  mkdirSync(logDir, { recursive: true, mode: 0o700 });
  const store = new SessionStore(c.database);
  const metrics = new BridgeMetrics(true);
  const template = BatchTemplate.load(c.template);
  const gateway = new Gateway(store, logger.child({ component: 'gateway' }));
  const gwAddr = await gateway.listen(c.gateway.port, c.gateway.host);
  const gatewayUrl = c.gateway.url ?? `http://${c.gateway.host}:${gwAddr.port}`;
  // Listen before building the service so that the URL jobs use holds the real port.
  const server: Server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(c.listen.port, c.listen.host, () => resolve());
  });
  const api = server.address() as AddressInfo;
  const service = new BridgeService({
    store,
    executor: makeExecutor(c, logDir),
    policy: makePolicy(c),
    template,
    logger,
    metrics,
    bridgeUrl: c.bridgeUrl ?? `http://${c.listen.host}:${api.port}`,
    gatewayUrl,
    agentCommand: c.agentCommand,
    resources: c.resources,
    slurm: { ...c.slurm, ...(c.executor === 'slurm' ? { logDir } : {}) },
    sessionConfig: c.session,
    pickupTtlSeconds: c.pickupTtlSeconds,
    pollIntervalMs: c.pollIntervalMs,
    minimumMinutes: c.minimumMinutes,
  });
  server.on('request', createApp({ service, apiToken, logger, metrics }));
  await service.start();
  logger.info(
    {
      event: 'listening',
      api: `${api.address}:${api.port}`,
      gateway: gatewayUrl,
      executor: c.executor,
    },
    'bridge listening',
  );
  return {
    api,
    gateway: gwAddr,
    service,
    async close() {
      service.stop();
      await gateway.close();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      store.close();
    },
  };
}
