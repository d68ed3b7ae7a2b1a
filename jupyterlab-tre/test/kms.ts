/** A real KMS (real SQLite, real HTTP) in a temporary directory, with a token table for auth. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { KmsServer, loadConfig } from '@tre/kms-service';
import { KmsClient } from '@tre/kms-service/client';

const DAY = 24 * 3600 * 1000;
const AGREEMENT = '2025-1';

export interface TestKms {
  url: string;
  /** The hub token of `name` (made on first use). */
  token(name: string, admin?: boolean): string;
  client(name: string, admin?: boolean): KmsClient;
  /** Registers `name`, accepts the agreement and records valid trainings. */
  onboard(name: string): Promise<KmsClient>;
  stop(): Promise<void>;
}

/** `services`: trusted hub services (the ingress), whose tokens `token(name)` then makes. */
export async function startKms(opts: { services?: string[] } = {}): Promise<TestKms> {
  const dir = mkdtempSync(join(tmpdir(), 'tre-lab-kms-'));
  const services = opts.services ?? [];
  const users = new Map<string, { name: string; admin: boolean; service?: boolean }>();
  const base = loadConfig(undefined, { JUPYTERHUB_API_URL: 'http://127.0.0.1:1/hub/api' });
  const tokens = new Map<string, string>();
  const server = await KmsServer.start(
    {
      ...base,
      hub: { ...base.hub, services },
      host: '127.0.0.1',
      port: 0,
      database: join(dir, 'kms.sqlite'),
      auditKey: join(dir, 'audit-key.pem'),
      agreementVersion: AGREEMENT,
      checkpointEvery: 20,
    },
    {
      // A unit-test stand-in for the hub's token check (kms-service tests the real hub).
      auth: { resolve: async (t: string) => users.get(t) ?? null },
      logger: pino({ level: 'silent' }),
      defaultMetrics: false,
    },
  );
  const token = (name: string, admin = false): string => {
    const key = `${name}:${admin}`;
    let t = tokens.get(key);
    if (!t) {
      t = `tok-${name}-${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}`;
      tokens.set(key, t);
      users.set(t, services.includes(name) ? { name, admin, service: true } : { name, admin });
    }
    return t;
  };
  const client = (name: string, admin = false) =>
    new KmsClient({ baseUrl: server.url, token: token(name, admin) });
  return {
    url: server.url,
    token,
    client,
    async onboard(name) {
      const c = client(name);
      await c.register('Uni Example');
      await c.acceptAgreement(AGREEMENT);
      const admin = client('admin', true);
      for (const kind of ['hpc', 'data_awareness', 'tre_rules'] as const) {
        await admin.recordTraining(
          name,
          kind,
          new Date(Date.now() - DAY).toISOString(),
          new Date(Date.now() + 365 * DAY).toISOString(),
        );
      }
      return c;
    },
    async stop() {
      await server.close(1000);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
