/**
 * Seeds the demo, idempotently: each step looks at what the hub and the KMS already hold and
 * does only what is missing, so a second start finds everything in place and changes nothing.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  decryptKeyFile,
  encodePublicKey,
  encryptKeyFile,
  generateKeyPair,
  projectKeyContext,
  publicKeyFromPrivate,
  unwrapKey,
  volumeKeyContext,
  wrapKey,
  type KeyFile,
  type KeyPair,
} from '@tre/crypto';
import { KmsClient, KmsClientError } from '@tre/kms-service';
import { writeDataset } from './dataset.js';
import { DEMO_USERS, OPERATOR, PROJECT, REPO, type Settings } from './settings.js';

const DAY = 24 * 3600 * 1000;
const AGREEMENT = '2025-1';

export interface Secrets {
  logins: Record<string, string>;
  passphrases: Record<string, string>;
}

function secretsDir(s: Settings): string {
  return join(s.state, 'secrets');
}

/** Creates a file of random secrets once; later starts read it back. */
function secretFile(path: string, make: () => string): string {
  if (!existsSync(path)) writeFileSync(path, make(), { mode: 0o600, flag: 'wx' });
  return readFileSync(path, 'utf8').trim();
}

const word = () => randomBytes(9).toString('base64url');

/** Everything that must exist before the services start: tokens, demo logins, passphrases. */
export function prepareSecrets(s: Settings): Secrets {
  const dir = secretsDir(s);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  secretFile(join(dir, 'bridge-token'), () => randomBytes(32).toString('base64url'));
  secretFile(join(dir, 'demo-service-token'), () => randomBytes(32).toString('hex'));
  secretFile(join(dir, 'ingress-service-token'), () => randomBytes(32).toString('hex'));
  const names = [...DEMO_USERS.map((u) => u.name), OPERATOR];
  const logins = JSON.parse(
    secretFile(join(dir, 'demo-logins.json'), () =>
      JSON.stringify(Object.fromEntries(names.map((n) => [n, `demo-${n}-${word()}`])), null, 2),
    ),
  ) as Record<string, string>;
  const passphrases = JSON.parse(
    secretFile(join(dir, 'key-passphrases.json'), () =>
      JSON.stringify(
        Object.fromEntries(DEMO_USERS.map((u) => [u.name, `key-${u.name}-${word()}`])),
        null,
        2,
      ),
    ),
  ) as Record<string, string>;
  return { logins, passphrases };
}

export class Hub {
  constructor(
    readonly api: string,
    private readonly token: string,
  ) {}

  async call(
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; body: unknown }> {
    const res = await fetch(`${this.api}${path}`, {
      method,
      headers: { Authorization: `token ${this.token}`, 'Content-Type': 'application/json' },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      // not JSON: keep the text for the error message
    }
    return { status: res.status, body: parsed };
  }

  /** The user's API token for the CLIs and the KMS, kept in the state folder (0600). */
  async userToken(s: Settings, user: string): Promise<string> {
    const file = join(secretsDir(s), `token-${user}`);
    if (existsSync(file)) {
      const token = readFileSync(file, 'utf8').trim();
      const probe = await fetch(`${this.api}/user`, {
        headers: { Authorization: `token ${token}` },
      });
      await probe.body?.cancel();
      if (probe.status === 200) return token;
    }
    const created = await this.call('POST', `/users/${user}`);
    if (created.status !== 201 && created.status !== 409) {
      throw new Error(
        `hub: cannot create user ${user}: ${created.status} ${JSON.stringify(created.body)}`,
      );
    }
    const res = await this.call('POST', `/users/${user}/tokens`, { note: 'tre-demo seed' });
    if (res.status !== 201 && res.status !== 200) {
      throw new Error(`hub: cannot create a token for ${user}: ${res.status}`);
    }
    const token = (res.body as { token: string }).token;
    writeFileSync(file, token, { mode: 0o600 });
    return token;
  }
}

// The wrap contexts trefs and the uploader open these records with.

function notFound(err: unknown): boolean {
  return err instanceof KmsClientError && err.status === 404;
}

/** Registers the user, accepts the agreement, records trainings and makes sure a KEK exists. */
async function onboard(
  s: Settings,
  kms: KmsClient,
  admin: KmsClient,
  user: string,
  passphrase: string,
  log: (m: string) => void,
): Promise<KeyPair> {
  let me = await kms.me();
  if (!me.registered) me = await kms.register('Demo University Hospital', `${user}@demo.invalid`);
  if (me.agreement.accepted !== AGREEMENT) me = await kms.acceptAgreement(AGREEMENT);
  const now = Date.now();
  for (const kind of ['hpc', 'data_awareness', 'tre_rules'] as const) {
    const t = me.trainings.find((x) => x.kind === kind);
    if (!t || new Date(t.expiresAt).getTime() < now + 30 * DAY) {
      await admin.recordTraining(
        user,
        kind,
        new Date(now - DAY).toISOString(),
        new Date(now + 365 * DAY).toISOString(),
      );
    }
  }
  const keyPath = join(s.state, 'keys', `${user}.json`);
  let kp: KeyPair;
  if (existsSync(keyPath)) {
    kp = await decryptKeyFile(JSON.parse(readFileSync(keyPath, 'utf8')) as KeyFile, passphrase);
  } else {
    kp = await generateKeyPair('x25519');
    const file = await encryptKeyFile(kp, passphrase);
    writeFileSync(keyPath, JSON.stringify(file, null, 2) + '\n', { mode: 0o600, flag: 'wx' });
    log(`key file for ${user}: ${keyPath}`);
  }
  if (me.kek?.kid !== kp.kid) await kms.addKek(encodePublicKey(kp));
  try {
    const stored = await kms.getKeyFile();
    if ((stored as { kid?: string }).kid !== kp.kid) throw new KmsClientError(404, 'stale', '');
  } catch (err) {
    if (!notFound(err)) throw err;
    await kms.putKeyFile(JSON.parse(readFileSync(keyPath, 'utf8')) as KeyFile);
  }
  return kp;
}

async function ensureProject(
  c: Record<string, KmsClient>,
  keys: Record<string, KeyPair>,
  log: (m: string) => void,
): Promise<void> {
  const pi = c.pi as KmsClient;
  let view;
  try {
    view = await pi.project(PROJECT);
  } catch (err) {
    if (!notFound(err)) throw err;
    view = await pi.proposeProject({
      id: PROJECT,
      title: 'Demo cohort: HbA1c and kidney function',
      description: 'Synthetic, pseudonymised patients and lab values (generated, no real data).',
    });
    log(`project ${PROJECT} proposed by pi`);
  }
  if (!view.members.some((m) => m.username === 'dataowner')) {
    await pi.addMember(PROJECT, { username: 'dataowner', role: 'data_owner' });
  }
  if (!view.publicKey) {
    const projectKp = await generateKeyPair('x25519');
    const volumeKey = randomBytes(32);
    const wraps = [];
    for (const u of ['pi', 'dataowner']) {
      wraps.push({
        username: u,
        wrapped: await wrapKey(
          projectKp.privateKey,
          keys[u] as KeyPair,
          projectKeyContext(PROJECT, 1),
        ),
      });
    }
    await pi.publishEpoch(PROJECT, {
      epoch: 1,
      publicKey: encodePublicKey(projectKp),
      volumeKey: await wrapKey(volumeKey, projectKp, volumeKeyContext(PROJECT)),
      wraps,
    });
    volumeKey.fill(0);
    projectKp.privateKey.fill(0);
    log('project key and volume key made and wrapped to pi and dataowner');
  }
  view = await pi.project(PROJECT);
  if (view.state === 'proposed') {
    await (c.dataowner as KmsClient).consent(PROJECT);
    log('dataowner consented');
  }
  if (!view.members.some((m) => m.username === 'researcher')) {
    await pi.addMember(PROJECT, {
      username: 'researcher',
      role: 'researcher',
      validUntil: new Date(Date.now() + 365 * DAY).toISOString(),
    });
  }
  const grants = await pi.grants(PROJECT);
  if (grants.length > 0) {
    const mine = await pi.projectKey(PROJECT);
    const priv = await unwrapKey(
      mine.wrapped!,
      keys.pi as KeyPair,
      projectKeyContext(PROJECT, mine.epoch),
    );
    const projectKp = await publicKeyFromPrivate('x25519', priv);
    for (const g of grants) {
      const kek = keys[g.username];
      if (!kek || !g.kek || g.kek.kid !== kek.kid) continue;
      await pi.completeGrant(
        PROJECT,
        g.id,
        await wrapKey(projectKp.privateKey, kek, projectKeyContext(PROJECT, g.epoch)),
      );
      log(`project key wrapped to ${g.username}`);
    }
    priv.fill(0);
  }
}

interface IngressRequest {
  id: string | number;
  state: string;
}

async function tre(args: string[], opts: { passphrase?: string; token: string }): Promise<string> {
  const fdArgs = opts.passphrase !== undefined ? ['--passphrase-fd', '3'] : [];
  const argv = [join(REPO, 'uploader', 'dist', 'cli.js'), ...args, '--token-file', opts.token];
  const child = spawn(process.execPath, [...argv, ...fdArgs], {
    cwd: REPO,
    stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
  });
  // The passphrase goes through descriptor 3, never argv or the environment.
  const fd3 = child.stdio[3] as NodeJS.WritableStream;
  fd3.on('error', () => {});
  fd3.end(opts.passphrase !== undefined ? opts.passphrase + '\n' : '');
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const code = await new Promise<number | null>((res) => child.once('close', res));
  if (code !== 0)
    throw new Error(`tre ${args.slice(0, 2).join(' ')} exited ${code}: ${err || out}`);
  return out;
}

/** Uploads the synthetic dataset with `tre upload` and confirms it as the PI (four eyes). */
async function ensureDataset(
  s: Settings,
  secrets: Secrets,
  log: (m: string) => void,
): Promise<void> {
  const ingress = `http://127.0.0.1:${s.ports.ingress}`;
  const kms = `http://127.0.0.1:${s.ports.kms}`;
  const tokenOf = (u: string) => join(secretsDir(s), `token-${u}`);
  const listed = await tre(['ingress', 'list', '--project', PROJECT, '--ingress', ingress], {
    token: tokenOf('pi'),
  }).catch(() => '');
  const requests = parseRequests(listed);
  if (requests.some((r) => r.state === 'confirmed')) return;
  const data = writeDataset(join(s.state, 'dataset', 'cohort'));
  log(`synthetic dataset (${data.patients} patients) written to ${data.dir}`);
  const out = await tre(
    [
      'upload',
      data.dir,
      '--project',
      PROJECT,
      '--ingress',
      ingress,
      '--kms',
      kms,
      '--key-file',
      join(s.state, 'keys', 'dataowner.json'),
      '--state-dir',
      join(s.state, 'dataset', 'upload-state'),
      '--legal-basis',
      'Synthetic demo data (no personal data)',
      '--pseudonymised',
      '--no-direct-identifiers',
      '--minimised',
      '--note',
      'Generated by the TRE demo',
      '--jobs',
      '2',
    ],
    { token: tokenOf('dataowner'), passphrase: secrets.passphrases.dataowner as string },
  );
  log(`tre upload: ${out.trim().split('\n').slice(-1)[0] ?? ''}`);
  const after = parseRequests(
    await tre(['ingress', 'list', '--project', PROJECT, '--ingress', ingress], {
      token: tokenOf('pi'),
    }),
  );
  const pending = after.filter((r) => r.state === 'submitted');
  for (const r of pending) {
    await tre(['ingress', 'review', String(r.id), '--confirm', '--ingress', ingress], {
      token: tokenOf('pi'),
    });
    log(`ingress request ${r.id} confirmed by pi (four eyes: uploaded by dataowner)`);
  }
}

function parseRequests(text: string): IngressRequest[] {
  if (!text.trim()) return [];
  const parsed = JSON.parse(text) as unknown;
  const list = Array.isArray(parsed)
    ? parsed
    : ((parsed as { requests?: unknown[] }).requests ?? []);
  return list as IngressRequest[];
}

export async function seed(
  s: Settings,
  hub: Hub,
  secrets: Secrets,
  log: (m: string) => void,
): Promise<void> {
  mkdirSync(join(s.state, 'keys'), { recursive: true, mode: 0o700 });
  const kmsUrl = `http://127.0.0.1:${s.ports.kms}`;
  const admin = new KmsClient({ baseUrl: kmsUrl, token: await hub.userToken(s, OPERATOR) });
  const clients: Record<string, KmsClient> = {};
  const keys: Record<string, KeyPair> = {};
  for (const u of DEMO_USERS) {
    clients[u.name] = new KmsClient({ baseUrl: kmsUrl, token: await hub.userToken(s, u.name) });
    keys[u.name] = await onboard(
      s,
      clients[u.name] as KmsClient,
      admin,
      u.name,
      secrets.passphrases[u.name] as string,
      log,
    );
  }
  await ensureProject(clients, keys, log);
  await ensureDataset(s, secrets, log);
  for (const kp of Object.values(keys)) kp.privateKey.fill(0);
}
