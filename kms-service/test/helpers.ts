/** Shared test setup: a real KMS server (real SQLite, real HTTP) in a temporary directory. */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import type { Authenticator } from '../src/hub-auth.js';
import type { HubUser } from '../src/kms.js';
import { KmsClient } from '../src/client.js';
import { loadConfig, type Config } from '../src/config.js';
import { KmsServer } from '../src/server.js';

/** Unit-test stand-in for the hub: a fixed token -> user table (the real hub has its own test). */
export class StaticAuth implements Authenticator {
  readonly users = new Map<string, HubUser>();
  add(name: string, admin = false, service = false): string {
    const token = `tok-${name}-${Math.random().toString(36).slice(2)}`;
    this.users.set(token, service ? { name, admin: false, service: true } : { name, admin });
    return token;
  }
  async resolve(token: string): Promise<HubUser | null> {
    return this.users.get(token) ?? null;
  }
}

export interface TestKms {
  dir: string;
  config: Config;
  server: KmsServer;
  auth: StaticAuth;
  url: string;
  /** A client acting as `name` (created in the hub table on first use); `service`: a hub service. */
  as(name: string, admin?: boolean, service?: boolean): KmsClient;
  clock: { now: Date };
  stop(): Promise<void>;
}

export async function startKms(
  opts: {
    agreementVersion?: string;
    checkpointEvery?: number;
    logLevel?: Config['logLevel'];
    logDestination?: string;
  } = {},
): Promise<TestKms> {
  const dir = mkdtempSync(join(tmpdir(), 'tre-kms-test-'));
  const config: Config = {
    ...loadConfig(undefined, { JUPYTERHUB_API_URL: 'http://127.0.0.1:1/hub/api' }),
    host: '127.0.0.1',
    port: 0,
    database: join(dir, 'kms.sqlite'),
    auditKey: join(dir, 'audit-key.pem'),
    agreementVersion: opts.agreementVersion ?? '2025-1',
    checkpointEvery: opts.checkpointEvery ?? 50,
  };
  const auth = new StaticAuth();
  const clock = { now: new Date() };
  const logger = opts.logDestination
    ? pino(
        { level: opts.logLevel ?? 'debug' },
        pino.destination({ dest: opts.logDestination, sync: true }),
      )
    : pino({ level: opts.logLevel ?? 'silent' });
  const server = await KmsServer.start(config, {
    auth,
    logger,
    now: () => clock.now,
    defaultMetrics: false,
  });
  const tokens = new Map<string, string>();
  return {
    dir,
    config,
    server,
    auth,
    url: server.url,
    clock,
    as(name: string, admin = false, service = false) {
      const key = `${name}:${admin}:${service}`;
      let token = tokens.get(key);
      if (!token) {
        token = auth.add(name, admin, service);
        tokens.set(key, token);
      }
      return new KmsClient({ baseUrl: server.url, token });
    },
    async stop() {
      await server.close(1000);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export const DAY = 24 * 3600 * 1000;

/** Registers `name`, accepts the agreement and records valid trainings (via an admin). */
export async function onboard(
  t: TestKms,
  name: string,
  organisation = 'Uni Example',
): Promise<KmsClient> {
  const c = t.as(name);
  await c.register(organisation);
  await c.acceptAgreement(t.config.agreementVersion);
  const admin = t.as('admin', true);
  const now = t.clock.now.getTime();
  for (const kind of ['hpc', 'data_awareness', 'tre_rules'] as const) {
    await admin.recordTraining(
      name,
      kind,
      new Date(now - DAY).toISOString(),
      new Date(now + 365 * DAY).toISOString(),
    );
  }
  return c;
}

/** A loopback port nobody listens on now, for a process the test starts moments later. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}
