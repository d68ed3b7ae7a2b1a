/** The bridge's configuration file (YAML); relative paths are relative to the file. */
import { readFileSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import YAML from 'yaml';
import { ConfigError } from './errors.js';
import { DEFAULT_RESOURCES, type ResourceLimits } from './service.js';

export interface BridgeConfig {
  listen: { host: string; port: number };
  gateway: { host: string; port: number; url?: string };
  /** How jobs on the nodes reach the bridge; defaults to the listen address. */
  bridgeUrl?: string;
  database: string;
  apiTokenFile: string;
  executor: 'slurm' | 'local';
  slurm: {
    sbatch?: string;
    squeue?: string;
    scancel?: string;
    commandPrefix?: string[];
    env?: Record<string, string>;
    partition?: string;
    account?: string;
    extraDirectives?: string[];
  };
  /** Where job output goes (Slurm's --output and the local executor's log). */
  logDir?: string;
  template?: string;
  agentCommand: string;
  resources: ResourceLimits;
  policy: { file?: string; kmsUrl?: string };
  session: Record<string, unknown>;
  pickupTtlSeconds: number;
  pollIntervalMs: number;
  minimumMinutes: number;
  logLevel: string;
}

const KEYS = new Set([
  'listen',
  'gateway',
  'bridgeUrl',
  'database',
  'apiTokenFile',
  'executor',
  'slurm',
  'logDir',
  'template',
  'agentCommand',
  'resources',
  'policy',
  'session',
  'pickupTtlSeconds',
  'pollIntervalMs',
  'minimumMinutes',
  'logLevel',
]);

function commandExists(cmd: string): boolean {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    try {
      if (statSync(resolve(dir, cmd)).isFile()) return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

/**
 * Each resource is merged with its default field by field, so a site that sets only `gpus.max`
 * keeps the default GRES name instead of offering GPUs it cannot request.
 */
function parseResources(raw: unknown): ResourceLimits {
  if (raw === undefined || raw === null) return DEFAULT_RESOURCES;
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError('resources must be a mapping of cpus, memoryGb, gpus, hours');
  }
  const given = raw as Record<string, unknown>;
  for (const k of Object.keys(given)) {
    if (!(k in DEFAULT_RESOURCES)) throw new ConfigError(`unknown resource "${k}"`);
  }
  const limit = <K extends keyof ResourceLimits>(name: K): ResourceLimits[K] => {
    const v = given[name] ?? {};
    if (typeof v !== 'object' || v === null || Array.isArray(v)) {
      throw new ConfigError(`resources.${name} must be a mapping of max and default`);
    }
    const merged = { ...DEFAULT_RESOURCES[name], ...(v as object) } as Record<string, unknown>;
    for (const k of Object.keys(merged)) {
      if (!(k in DEFAULT_RESOURCES[name])) {
        throw new ConfigError(`unknown setting "${k}" in resources.${name}`);
      }
    }
    const { max, default: dflt } = merged;
    if (!Number.isInteger(max) || (max as number) < 0) {
      throw new ConfigError(`resources.${name}.max must be a whole number >= 0`);
    }
    if (!Number.isInteger(dflt) || (dflt as number) < 0 || (dflt as number) > (max as number)) {
      throw new ConfigError(`resources.${name}.default must be a whole number from 0 to max`);
    }
    if (
      'gresName' in merged &&
      (typeof merged.gresName !== 'string' ||
        !/^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?$/.test(merged.gresName))
    ) {
      throw new ConfigError(`resources.${name}.gresName must be a Slurm GRES name such as "gpu"`);
    }
    return merged as unknown as ResourceLimits[K];
  };
  return {
    cpus: limit('cpus'),
    memoryGb: limit('memoryGb'),
    gpus: limit('gpus'),
    hours: limit('hours'),
  };
}

export function parseConfig(text: string, baseDir: string): BridgeConfig {
  let raw: Record<string, unknown>;
  try {
    raw = (YAML.parse(text) ?? {}) as Record<string, unknown>;
  } catch (err) {
    throw new ConfigError(`not YAML: ${(err as Error).message}`);
  }
  for (const k of Object.keys(raw)) {
    if (!KEYS.has(k)) throw new ConfigError(`unknown setting "${k}"`);
  }
  const path = (p: unknown, what: string): string => {
    if (typeof p !== 'string' || p === '') throw new ConfigError(`${what} must be a path`);
    return resolve(baseDir, p);
  };
  const listen = { host: '127.0.0.1', port: 8090, ...(raw.listen as object) };
  const gateway = { host: '127.0.0.1', port: 8091, ...(raw.gateway as object) };
  // Without Slurm on this machine the embedded default runs jobs as local processes.
  const executor =
    (raw.executor as string | undefined) ?? (commandExists('sbatch') ? 'slurm' : 'local');
  if (executor !== 'slurm' && executor !== 'local') {
    throw new ConfigError('executor must be "slurm" or "local"');
  }
  if (typeof raw.agentCommand !== 'string' || raw.agentCommand.trim() === '') {
    throw new ConfigError('agentCommand (how a job starts tre-job-agent) is required');
  }
  const policy = (raw.policy ?? {}) as { file?: string; kmsUrl?: string };
  if (!policy.file === !policy.kmsUrl) {
    throw new ConfigError('policy needs exactly one of file or kmsUrl');
  }
  const resources = parseResources(raw.resources);
  const config: BridgeConfig = {
    listen,
    gateway,
    database: path(raw.database, 'database'),
    apiTokenFile: path(raw.apiTokenFile, 'apiTokenFile'),
    executor,
    slurm: (raw.slurm ?? {}) as BridgeConfig['slurm'],
    agentCommand: raw.agentCommand,
    resources,
    policy: policy.file
      ? { file: path(policy.file, 'policy.file') }
      : { kmsUrl: policy.kmsUrl as string },
    session: (raw.session ?? {}) as Record<string, unknown>,
    pickupTtlSeconds: Number(raw.pickupTtlSeconds ?? 600),
    pollIntervalMs: Number(raw.pollIntervalMs ?? 2000),
    minimumMinutes: Number(raw.minimumMinutes ?? 5),
    logLevel: (raw.logLevel as string | undefined) ?? 'info',
  };
  if (raw.bridgeUrl !== undefined) config.bridgeUrl = String(raw.bridgeUrl);
  if (raw.logDir !== undefined) config.logDir = path(raw.logDir, 'logDir');
  if (raw.template !== undefined) config.template = path(raw.template, 'template');
  for (const [name, v] of [
    ['pickupTtlSeconds', config.pickupTtlSeconds],
    ['pollIntervalMs', config.pollIntervalMs],
  ] as const) {
    if (!Number.isFinite(v) || v <= 0) throw new ConfigError(`${name} must be a positive number`);
  }
  return config;
}

export function loadConfig(file: string): BridgeConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code}`);
  }
  return parseConfig(text, dirname(resolve(file)));
}

/** Reads the shim's API token; the file must be private to its owner. */
export function readApiToken(file: string): string {
  let info;
  try {
    info = statSync(file);
  } catch {
    throw new ConfigError(`API token file not readable: ${file}`);
  }
  if ((info.mode & 0o077) !== 0) {
    throw new ConfigError(`API token file must not be accessible by group or others: ${file}`);
  }
  const token = readFileSync(file, 'utf8').trim();
  if (token.length < 32)
    throw new ConfigError(`API token in ${file} is shorter than 32 characters`);
  return token;
}
