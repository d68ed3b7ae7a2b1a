/** Configuration: a YAML or JSON file, then environment variables on top. */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import YAML from 'yaml';

export interface Config {
  host: string;
  port: number;
  database: string;
  /** 'normal' survives process crashes; 'full' also power loss (one fsync per change). */
  synchronous: 'normal' | 'full';
  /** Ed25519 key signing audit checkpoints; created with mode 0600 on first start. */
  auditKey: string;
  checkpointEvery: number;
  agreementVersion: string;
  /** `services`: hub services trusted to confirm or destroy staged files and append audit events. */
  hub: {
    apiUrl: string;
    apiToken?: string;
    cacheSeconds: number;
    services: string[];
    /** Present when the KMS is the hub's OAuth client: the console then signs in through it. */
    oauth?: OAuthClientConfig;
  };
  /**
   * Processes serving requests (node:cluster, one shared port). SQLite in WAL mode serialises
   * their writes; each process has its own hub-token cache and its own /metrics.
   */
  workers: number;
  /** Seconds between a vault recovery request and the first trustee approval (admins may cancel). */
  recoveryDelaySeconds: number;
  /** A TRE console session unused for this many minutes ends (it ends after 12 hours anyway). */
  consoleIdleMinutes: number;
  /** The hub proxy's prefix for this service (JUPYTERHUB_SERVICE_PREFIX, e.g. /services/kms/). */
  servicePrefix?: string;
  metricsToken?: string;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
}

/** The console's OAuth 2 client at the hub (what jupyterhub's HubOAuth reads from JUPYTERHUB_*). */
export interface OAuthClientConfig {
  /** `service-<name>`: JUPYTERHUB_CLIENT_ID or hub.clientId. */
  clientId: string;
  /** The browser is sent here to sign in: `{hub public URL}hub/api/oauth2/authorize`. */
  authorizeUrl: string;
  /** Code exchange, server to server: `{apiUrl}/oauth2/token`. */
  tokenUrl: string;
  /** Where the hub sends the browser back: JUPYTERHUB_OAUTH_CALLBACK_URL, `{prefix}oauth_callback`. */
  redirectUri: string;
  /** The hub is served over https (JUPYTERHUB_PUBLIC_URL): cookies are always Secure. */
  https: boolean;
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

function str(v: unknown, what: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string' || v === '')
    throw new ConfigError(`${what} must be a non-empty string`);
  return v;
}

function int(v: unknown, what: string, min: number, max: number): number | undefined {
  if (v === undefined || v === null) return undefined;
  const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) {
    throw new ConfigError(`${what} must be an integer from ${min} to ${max}`);
  }
  return n;
}

/**
 * Builds the configuration from an optional file and the environment. Paths in the file are
 * relative to the file. JUPYTERHUB_* variables are what the hub gives a managed service.
 */
export function loadConfig(file?: string, env: NodeJS.ProcessEnv = process.env): Config {
  let raw: Record<string, unknown> = {};
  const base = file ? dirname(resolve(file)) : process.cwd();
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      throw new ConfigError(`cannot read config file ${file}: ${(e as Error).message}`);
    }
    let parsed: unknown;
    try {
      parsed = YAML.parse(text);
    } catch (e) {
      throw new ConfigError(`config file ${file} is not YAML or JSON: ${(e as Error).message}`);
    }
    if (parsed !== null && parsed !== undefined) {
      if (typeof parsed !== 'object' || Array.isArray(parsed)) {
        throw new ConfigError(`config file ${file} must hold a mapping`);
      }
      raw = parsed as Record<string, unknown>;
    }
    const known = [
      'host',
      'port',
      'database',
      'synchronous',
      'auditKey',
      'checkpointEvery',
      'agreementVersion',
      'hub',
      'metricsToken',
      'logLevel',
      'servicePrefix',
      'workers',
      'recoveryDelaySeconds',
      'consoleIdleMinutes',
    ];
    for (const k of Object.keys(raw)) {
      if (!known.includes(k)) throw new ConfigError(`unknown setting ${k} in ${file}`);
    }
  }
  const hubRaw = (raw.hub ?? {}) as Record<string, unknown>;
  if (typeof hubRaw !== 'object' || Array.isArray(hubRaw))
    throw new ConfigError('hub must be a mapping');
  const path = (p: string | undefined): string | undefined =>
    p === undefined ? undefined : resolve(base, p);

  let host = str(env.TRE_KMS_HOST, 'TRE_KMS_HOST') ?? str(raw.host, 'host');
  let port = int(env.TRE_KMS_PORT, 'TRE_KMS_PORT', 0, 65535) ?? int(raw.port, 'port', 0, 65535);
  const serviceUrl = str(env.JUPYTERHUB_SERVICE_URL, 'JUPYTERHUB_SERVICE_URL');
  if (serviceUrl) {
    const u = new URL(serviceUrl);
    host ??= u.hostname;
    port ??= Number(u.port || 80);
  }
  const database =
    str(env.TRE_KMS_DATABASE, 'TRE_KMS_DATABASE') ??
    path(str(raw.database, 'database')) ??
    resolve('tre-kms.sqlite');
  const synchronous =
    str(env.TRE_KMS_SYNCHRONOUS, 'TRE_KMS_SYNCHRONOUS') ??
    str(raw.synchronous, 'synchronous') ??
    'normal';
  if (synchronous !== 'normal' && synchronous !== 'full')
    throw new ConfigError('synchronous must be normal or full');
  const logLevel =
    str(env.TRE_KMS_LOG_LEVEL, 'TRE_KMS_LOG_LEVEL') ?? str(raw.logLevel, 'logLevel') ?? 'info';
  if (!LOG_LEVELS.includes(logLevel))
    throw new ConfigError(`logLevel must be one of ${LOG_LEVELS.join(', ')}`);
  const apiUrl =
    str(env.JUPYTERHUB_API_URL, 'JUPYTERHUB_API_URL') ?? str(hubRaw.apiUrl, 'hub.apiUrl');
  if (!apiUrl)
    throw new ConfigError('the hub API URL is required (hub.apiUrl or JUPYTERHUB_API_URL)');
  try {
    new URL(apiUrl);
  } catch {
    throw new ConfigError('the hub API URL is not a URL');
  }
  const apiToken =
    str(env.JUPYTERHUB_API_TOKEN, 'JUPYTERHUB_API_TOKEN') ?? str(hubRaw.apiToken, 'hub.apiToken');
  const servicesRaw =
    str(env.TRE_KMS_HUB_SERVICES, 'TRE_KMS_HUB_SERVICES')
      ?.split(',')
      .map((x) => x.trim()) ??
    hubRaw.services ??
    [];
  if (
    !Array.isArray(servicesRaw) ||
    servicesRaw.some((s) => typeof s !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(s))
  ) {
    throw new ConfigError('hub.services must be a list of hub service names');
  }
  const prefixRaw =
    str(env.JUPYTERHUB_SERVICE_PREFIX, 'JUPYTERHUB_SERVICE_PREFIX') ??
    str(raw.servicePrefix, 'servicePrefix');
  if (prefixRaw !== undefined && !/^\/[A-Za-z0-9._~/-]*$/.test(prefixRaw)) {
    throw new ConfigError('the service prefix must be an absolute URL path');
  }
  const servicePrefix =
    prefixRaw === undefined || prefixRaw === '/' ? undefined : prefixRaw.replace(/\/*$/, '/');
  const clientId =
    str(env.JUPYTERHUB_CLIENT_ID, 'JUPYTERHUB_CLIENT_ID') ?? str(hubRaw.clientId, 'hub.clientId');
  let oauth: OAuthClientConfig | undefined;
  if (clientId && apiToken) {
    // The hub's public base: JUPYTERHUB_HOST (empty when the hub serves the same origin) and
    // JUPYTERHUB_BASE_URL, as HubOAuth builds its authorize URL.
    const publicHub =
      str(hubRaw.publicUrl, 'hub.publicUrl') ??
      `${env.JUPYTERHUB_HOST ?? ''}${env.JUPYTERHUB_BASE_URL ?? '/'}`;
    const redirectUri =
      str(env.JUPYTERHUB_OAUTH_CALLBACK_URL, 'JUPYTERHUB_OAUTH_CALLBACK_URL') ??
      str(hubRaw.oauthCallbackUrl, 'hub.oauthCallbackUrl') ??
      `${servicePrefix ?? '/'}oauth_callback`;
    if (!/(^|\/)oauth_callback$/.test(new URL(redirectUri, 'http://x').pathname)) {
      throw new ConfigError('the OAuth callback URL must end in /oauth_callback');
    }
    const publicUrl = env.JUPYTERHUB_PUBLIC_URL ?? publicHub;
    oauth = {
      clientId,
      authorizeUrl: `${publicHub.replace(/\/*$/, '/')}hub/api/oauth2/authorize`,
      tokenUrl: `${apiUrl.replace(/\/+$/, '')}/oauth2/token`,
      redirectUri,
      https: /^https:/i.test(publicUrl),
    };
  }
  const metricsToken =
    str(env.TRE_KMS_METRICS_TOKEN, 'TRE_KMS_METRICS_TOKEN') ??
    str(raw.metricsToken, 'metricsToken');
  return {
    host: host ?? '127.0.0.1',
    port: port ?? 8090,
    database,
    synchronous,
    auditKey:
      str(env.TRE_KMS_AUDIT_KEY, 'TRE_KMS_AUDIT_KEY') ??
      path(str(raw.auditKey, 'auditKey')) ??
      `${database}.audit-key.pem`,
    checkpointEvery: int(raw.checkpointEvery, 'checkpointEvery', 1, 1_000_000) ?? 1000,
    workers:
      int(env.TRE_KMS_WORKERS, 'TRE_KMS_WORKERS', 1, 64) ?? int(raw.workers, 'workers', 1, 64) ?? 1,
    recoveryDelaySeconds:
      int(raw.recoveryDelaySeconds, 'recoveryDelaySeconds', 0, 30 * 86400) ?? 86400,
    consoleIdleMinutes: int(raw.consoleIdleMinutes, 'consoleIdleMinutes', 1, 720) ?? 30,
    agreementVersion:
      str(env.TRE_KMS_AGREEMENT_VERSION, 'TRE_KMS_AGREEMENT_VERSION') ??
      str(raw.agreementVersion, 'agreementVersion') ??
      '1',
    hub: {
      apiUrl,
      ...(apiToken ? { apiToken } : {}),
      cacheSeconds: int(hubRaw.cacheSeconds, 'hub.cacheSeconds', 0, 3600) ?? 30,
      services: servicesRaw as string[],
      ...(oauth ? { oauth } : {}),
    },
    ...(servicePrefix ? { servicePrefix } : {}),
    ...(metricsToken ? { metricsToken } : {}),
    logLevel: logLevel as Config['logLevel'],
  };
}
