/** Where the demo keeps its state and which loopback ports it uses. */
import { execFileSync } from 'node:child_process';
import { realpathSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The demo users; their hub names double as KMS user names. */
export const DEMO_USERS = [
  { name: 'researcher', role: 'researcher', title: 'Researcher' },
  { name: 'pi', role: 'pi', title: 'Principal investigator' },
  { name: 'dataowner', role: 'data_owner', title: 'Data owner (hospital)' },
] as const;
export type DemoUser = (typeof DEMO_USERS)[number]['name'];
/** A hub admin: the KMS takes training records only from a hub admin. */
export const OPERATOR = 'operator';
export const PROJECT = 'demo';

export interface Ports {
  hub: number;
  hubInternal: number;
  proxyApi: number;
  kms: number;
  ingress: number;
  bridge: number;
  gateway: number;
}

export function portsFrom(base: number): Ports {
  if (!Number.isInteger(base) || base < 1024 || base > 65535 - 6) {
    throw new Error(`port must be a whole number from 1024 to ${65535 - 6}, got ${base}`);
  }
  return {
    hub: base,
    hubInternal: base + 1,
    proxyApi: base + 2,
    kms: base + 3,
    ingress: base + 4,
    bridge: base + 5,
    gateway: base + 6,
  };
}

export interface Settings {
  state: string;
  ports: Ports;
  executor: 'local' | 'slurm';
  slurmConf: string;
  venv: string;
  node: string;
}

export function settings(opts: { state?: string; port?: number; slurm?: boolean }): Settings {
  return {
    state: resolve(opts.state ?? join(REPO, '.tre-demo')),
    ports: portsFrom(opts.port ?? 8700),
    executor: opts.slurm ? 'slurm' : 'local',
    slurmConf:
      process.env.SLURM_CONF ?? join(process.env.TRE_SLURM_DIR ?? '/tmp/tre-slurm', 'slurm.conf'),
    venv: realpathSync(join(REPO, '.venv')),
    node: process.execPath,
  };
}

/** The Python the venv was made from: sessions must see it (read-only) too. */
export function pythonBasePrefix(venv: string): string {
  return execFileSync(join(venv, 'bin', 'python'), ['-c', 'import sys; print(sys.base_prefix)'], {
    encoding: 'utf8',
  }).trim();
}
