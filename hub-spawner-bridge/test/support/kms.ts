/**
 * The real KMS (tre-kms serve) for the session tests, with identities from the real JupyterHub,
 * and trefs mounted from the test itself to put data into and read it out of a cipher directory.
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodePublicKey, type KeyPair } from '@tre/crypto';
import { KmsClient } from '@tre/kms-service';
import { Proc, REPO, TREFS_COMMAND, freePort, waitFor } from './harness.js';

export const DAY = 24 * 3600_000;
export const TRAININGS = ['hpc', 'data_awareness', 'tre_rules'] as const;

export interface RunningKms {
  url: string;
  proc: Proc;
  log: string;
}

/** Starts tre-kms against the hub; `hubToken` is its service token (reads users' admin flag). */
export async function startKmsProcess(
  dir: string,
  hubApiUrl: string,
  hubToken: string,
): Promise<RunningKms> {
  const port = await freePort();
  const config = join(dir, 'kms.yaml');
  writeFileSync(
    config,
    [
      'host: 127.0.0.1',
      `port: ${port}`,
      'database: kms.sqlite',
      'auditKey: kms-audit.pem',
      'agreementVersion: "1"',
      `hub: { apiUrl: ${JSON.stringify(hubApiUrl)}, cacheSeconds: 0 }`,
    ].join('\n'),
  );
  const log = join(dir, 'kms.log');
  const proc = new Proc(
    [process.execPath, join(REPO, 'kms-service', 'dist', 'cli.js'), 'serve', '-c', config],
    { cwd: dir, log, env: { JUPYTERHUB_API_TOKEN: hubToken } },
  );
  const url = `http://127.0.0.1:${port}`;
  await waitFor('the KMS', async () => (await fetch(`${url}/healthz`)).ok, 30_000);
  return { url, proc, log };
}

/** Registers a person, accepts the agreement and records their trainings (by an admin). */
export async function onboard(
  kms: string,
  token: string,
  admin: KmsClient,
  username: string,
  opts: { kek?: KeyPair; expiredTraining?: (typeof TRAININGS)[number] } = {},
): Promise<KmsClient> {
  const c = new KmsClient({ baseUrl: kms, token });
  await c.register('University Hospital');
  await c.acceptAgreement('1');
  const now = Date.now();
  for (const kind of TRAININGS) {
    const expired = opts.expiredTraining === kind;
    await admin.recordTraining(
      username,
      kind,
      new Date(now - (expired ? 400 : 1) * DAY).toISOString(),
      new Date(now + (expired ? -DAY : 365 * DAY)).toISOString(),
    );
  }
  if (opts.kek) await c.addKek(encodePublicKey(opts.kek));
  return c;
}

/**
 * Mounts a project's cipher directory with the trefs CLI as `kek`'s owner (key and token on fd 3),
 * runs `fn` on the mountpoint, unmounts; resolves with trefs's exit code after `fn`'s result.
 */
export async function withTrefs<T>(
  o: { cipherDir: string; mountpoint: string; project: string; kms: string; token: string },
  kek: KeyPair,
  fn: (mountpoint: string) => Promise<T>,
): Promise<T> {
  const [cmd, ...pre] = TREFS_COMMAND;
  const child = spawn(
    cmd as string,
    [
      ...pre,
      'mount',
      o.cipherDir,
      o.mountpoint,
      '--project',
      o.project,
      '--kms',
      o.kms,
      '--key-fd',
      '3',
    ],
    { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] },
  );
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number>((r) => child.once('exit', (c) => r(c ?? 1)));
  const key = JSON.stringify({
    kem: kek.kem,
    privateKey: Buffer.from(kek.privateKey).toString('base64url'),
    kmsToken: o.token,
  });
  (child.stdio[3] as NodeJS.WritableStream).end(key);
  await waitFor(
    'the trefs mount',
    () => {
      if (child.exitCode !== null) throw new Error(`trefs exited ${child.exitCode}: ${err}`);
      return out.includes('trefs: mounted');
    },
    60_000,
    100,
  );
  let result: T;
  try {
    result = await fn(o.mountpoint);
  } finally {
    child.kill('SIGTERM');
  }
  const code = await exited;
  if (code !== 0) throw new Error(`trefs exited ${code}: ${err}`);
  return result;
}
