/**
 * Stand-ins for an HPC site's parts on one machine, each in a temporary folder of its own, for
 * the operator guide's `sh site` blocks: a private one-node Slurm (scripts/slurm-local with its
 * own state folder, ports and munge key), a self-signed certificate for 127.0.0.1, and a
 * JupyterHub of its own on loopback. Nothing here reads or writes the machine's configuration.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from './demo.js';

export async function freePort(): Promise<number> {
  const s = createServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const { port } = s.address() as AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

export async function until(
  what: string,
  ok: () => boolean | Promise<boolean>,
  ms = 30_000,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export const tempDir = (name: string) => mkdtempSync(join(tmpdir(), `tre-doc-${name}-`));

export interface PrivateSlurm {
  conf: string;
  node: string;
  env: NodeJS.ProcessEnv;
  stop(): void;
}

/**
 * A one-node Slurm of its own (slurm-local with another state folder and ports), whose
 * generated partition is renamed `local` so that a block can add a partition `tre` to it.
 */
export async function privateSlurm(): Promise<PrivateSlurm> {
  const dir = tempDir('slurm');
  const env = {
    ...process.env,
    TRE_SLURM_DIR: dir,
    TRE_SLURM_CTLD_PORT: String(await freePort()),
    TRE_SLURM_SLURMD_PORT: String(await freePort()),
    SLURM_CONF: join(dir, 'slurm.conf'),
  };
  const script = join(REPO, 'scripts', 'slurm-local');
  const stop = () => {
    spawnSync(script, ['stop'], { env, stdio: 'ignore' });
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    execFileSync(script, ['start'], { env, stdio: 'pipe' });
    const conf = readFileSync(env.SLURM_CONF, 'utf8');
    writeFileSync(env.SLURM_CONF, conf.replace(/^PartitionName=tre /m, 'PartitionName=local '));
    execFileSync('scontrol', ['reconfigure'], { env, stdio: 'pipe' });
  } catch (err) {
    stop();
    throw err;
  }
  return { conf: env.SLURM_CONF, node: hostname().split('.')[0] as string, env, stop };
}

/** A self-signed certificate for 127.0.0.1, as `<dir>/hub.crt` and `<dir>/hub.key`. */
export function selfSignedCert(dir: string): { cert: string; key: string } {
  const cert = join(dir, 'hub.crt');
  const key = join(dir, 'hub.key');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-days',
      '1',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
      '-keyout',
      key,
      '-out',
      cert,
    ],
    { stdio: 'pipe' },
  );
  return { cert, key };
}

/**
 * The start of a hub configuration as a site's would be before the guide's blocks add to it:
 * loopback ports, state in `etc`, the proxy from node_modules.
 */
export async function baseHubConfig(etc: string): Promise<{ port: number; config: string }> {
  const port = await freePort();
  const config = join(etc, 'jupyterhub_config.py');
  writeFileSync(
    config,
    [
      `c.JupyterHub.ip = '127.0.0.1'`,
      `c.JupyterHub.port = ${port}`,
      `c.JupyterHub.hub_ip = '127.0.0.1'`,
      `c.JupyterHub.hub_port = ${await freePort()}`,
      `c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:${await freePort()}'`,
      `c.ConfigurableHTTPProxy.command = ['${join(REPO, 'node_modules', '.bin', 'configurable-http-proxy')}']`,
      `c.JupyterHub.db_url = 'sqlite:///${join(etc, 'jupyterhub.sqlite')}'`,
      `c.JupyterHub.cookie_secret_file = '${join(etc, 'jupyterhub_cookie_secret')}'`,
      `c.JupyterHub.authenticator_class = 'dummy'`,
      '',
    ].join('\n'),
  );
  return { port, config };
}

export interface Hub {
  child: ChildProcess;
  log(): string;
  stop(): Promise<void>;
}

/** Starts the repository venv's JupyterHub on `config` and waits until `ready` says so. */
export async function startHub(
  etc: string,
  config: string,
  ready: () => Promise<boolean>,
): Promise<Hub> {
  const child = spawn(join(REPO, '.venv', 'bin', 'jupyterhub'), ['-f', config], {
    cwd: etc,
    env: { ...process.env, PATH: `${join(REPO, '.venv', 'bin')}:${process.env.PATH ?? ''}` },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    await once(child, 'exit');
  };
  try {
    await until(
      'the hub to answer',
      async () => {
        if (child.exitCode !== null) throw new Error(`the hub exited ${child.exitCode}:\n${out}`);
        return ready().catch(() => false);
      },
      60_000,
    );
  } catch (err) {
    await stop();
    throw new Error(`${(err as Error).message}\n${out.slice(-3000)}`);
  }
  return { child, log: () => out, stop };
}
