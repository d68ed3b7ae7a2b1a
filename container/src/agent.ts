/**
 * The job agent: runs on the compute node, outside the container, as the batch job's main
 * process. It collects the session's secrets from the bridge with the one-time pickup token,
 * starts the container, and is the container's only way in and out:
 *   in:  the hub's HTTP and WebSocket traffic (through the bridge's gateway, which proves itself
 *        with the per-job secret) to jupyter-server's and Xvnc's unix sockets; the desktop path
 *        goes through the desktop proxy's RFB clipboard filter, which the user cannot reach;
 *   out: jupyter-server's calls to the hub API, through a unix socket, and nothing else.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, timingSafeEqual } from 'node:crypto';
import { mkdtempSync, rmSync, existsSync, mkdirSync, readdirSync, rmdirSync } from 'node:fs';
import {
  createServer,
  request as httpRequest,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { createDesktopProxy, hubAuthenticator, type DesktopProxy } from '@tre/desktop-proxy';
import {
  PICKUP_MEDIA_TYPE,
  PickupWireError,
  decodePickup,
} from '@tre/hub-spawner-bridge/pickup-wire';
import httpProxy from 'http-proxy';
import type { Logger } from 'pino';
import { AgentError } from './errors.js';
import { cipherDirOf, TrefsMount, type TrefsSettings } from './trefs-mount.js';

export const AGENT_SECRET_HEADER = 'x-tre-agent-secret';
export const PACKAGE_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Site settings the bridge passes (no secrets). */
export interface SessionSettings {
  runtime?: 'bwrap' | 'apptainer';
  /** Apptainer image (SIF). */
  image?: string;
  /** Where plain project directories live: <dataRoot>/<project> (when trefs is not set). */
  dataRoot?: string;
  /** The project's data through trefs, mounted by the agent and bound at /data/<project>. */
  trefs?: TrefsSettings;
  /** The KMS relayed at /services/kms/v1/ inside the container; default trefs's kmsUrl. */
  kmsUrl?: string;
  /** Where the agent creates the job's directory (sockets); default the system temp dir. */
  workRoot?: string;
  /** Address the agent listens on and the one it tells the bridge. */
  listenHost?: string;
  advertiseHost?: string;
  /** Host paths made visible read-only in a bubblewrap container (e.g. a Python environment). */
  readOnlyPaths?: string[];
  /** Prepended to PATH inside the container. */
  pathPrepend?: string[];
  /** Origins besides the hub's own host that may open the desktop. */
  allowedOrigins?: string[];
  readyTimeoutSeconds?: number;
}

export interface PickupConfig {
  sessionId: string;
  user: string;
  project: string;
  baseUrl: string;
  agentSecret: string;
  env: Record<string, string>;
  timeLimitMinutes: number;
  endsAt: string | null;
  session: SessionSettings;
}

export interface AgentOptions {
  bridgeUrl: string;
  sessionId: string;
  jobId: string;
  token: string;
  logger: Logger;
}

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

async function sleep(ms: number) {
  await new Promise((r) => setTimeout(r, ms));
}

/** Collects the pickup; retries while the bridge has not yet bound it to this job. */
export async function collectPickup(
  o: Pick<AgentOptions, 'bridgeUrl' | 'sessionId' | 'jobId' | 'token'>,
): Promise<{ config: PickupConfig; kek: Buffer | null }> {
  const url = new URL('api/v1/pickup', o.bridgeUrl.endsWith('/') ? o.bridgeUrl : `${o.bridgeUrl}/`);
  for (let attempt = 0; ; attempt++) {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ session: o.sessionId, job: o.jobId, token: o.token }),
      signal: AbortSignal.timeout(15_000),
    });
    if (res.status === 409 && attempt < 60) {
      await res.body?.cancel();
      await sleep(500);
      continue;
    }
    if (!res.ok) {
      let code = `HTTP ${res.status}`;
      try {
        code = ((await res.json()) as { error?: { code?: string } }).error?.code ?? code;
      } catch {
        // the status has to do
      }
      throw new AgentError(`the bridge refused the pickup (${code})`);
    }
    if (res.headers.get('content-type') !== PICKUP_MEDIA_TYPE) {
      await res.body?.cancel();
      throw new AgentError(
        `the bridge answered the pickup with ${res.headers.get('content-type')}`,
      );
    }
    const body = new Uint8Array(await res.arrayBuffer());
    try {
      const { config, kek } = decodePickup(body);
      return { config: config as unknown as PickupConfig, kek };
    } catch (err) {
      if (err instanceof PickupWireError) throw new AgentError(err.message);
      throw err;
    } finally {
      body.fill(0);
    }
  }
}

async function report(
  o: AgentOptions,
  secret: string,
  body: { host: string; port: number } | { error: string },
): Promise<void> {
  const url = new URL(
    `api/v1/sessions/${encodeURIComponent(o.sessionId)}/agent`,
    o.bridgeUrl.endsWith('/') ? o.bridgeUrl : `${o.bridgeUrl}/`,
  );
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${secret}` },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(15_000),
  });
  await res.body?.cancel();
  if (!res.ok) throw new AgentError(`the bridge did not accept the report (HTTP ${res.status})`);
}

function listenUnix(server: Server, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
}

/** Where the KMS is relayed from inside the container (the hub proxy's path for the service). */
export const KMS_RELAY_PREFIX = '/services/kms/';

/**
 * The container's way out: an HTTP server on a unix socket that forwards requests under the hub
 * API path to the hub and, when `kmsUrl` is set, the KMS's `/v1/` API under
 * {@link KMS_RELAY_PREFIX} to the KMS (for the lab's server extension, which calls it with the
 * user's hub token), and refuses everything else.
 */
export function createHubRelay(hubApiUrl: string, log: Logger, kmsUrl?: string): Server {
  const api = new URL(hubApiUrl.endsWith('/') ? hubApiUrl : `${hubApiUrl}/`);
  const kms = kmsUrl ? new URL(kmsUrl.endsWith('/') ? kmsUrl : `${kmsUrl}/`) : undefined;
  const onError = (err: Error, _req: IncomingMessage, res: ServerResponse | Duplex) => {
    log.warn(
      { event: 'hub-relay-error', err: (err as NodeJS.ErrnoException).code ?? err.message },
      'hub or KMS unreachable',
    );
    const r = res as ServerResponse;
    if (!r.headersSent) r.writeHead(502);
    r.end();
  };
  const proxy = httpProxy.createProxyServer({ target: api.origin, changeOrigin: true });
  proxy.on('error', onError);
  const kmsProxy = kms
    ? httpProxy.createProxyServer({ target: kms.origin, changeOrigin: true })
    : undefined;
  kmsProxy?.on('error', onError);
  return createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0] as string;
    const suspicious = path.includes('/../') || /%2e/i.test(path) || path.includes('//');
    const toHub = path.startsWith(api.pathname) || `${path}/` === api.pathname;
    const toKms = kms && kmsProxy && path.startsWith(`${KMS_RELAY_PREFIX}v1/`);
    if (!suspicious && toHub) {
      proxy.web(req, res);
      return;
    }
    if (!suspicious && toKms) {
      req.url = `${kms.pathname}${(req.url as string).slice(KMS_RELAY_PREFIX.length)}`;
      kmsProxy.web(req, res);
      return;
    }
    log.warn(
      { event: 'hub-relay-refused', method: req.method, path },
      'refused a call out of the container',
    );
    res.writeHead(403, { 'Content-Type': 'text/plain' });
    res.end('only the hub API and the KMS are reachable from a session\n');
  });
}

/** Waits until jupyter-server answers on its socket. */
async function waitForJupyter(
  socketPath: string,
  baseUrl: string,
  deadline: number,
  alive: () => boolean,
) {
  while (Date.now() < deadline) {
    if (!alive()) throw new AgentError('the container exited before jupyter-server came up');
    if (existsSync(socketPath)) {
      const status = await new Promise<number>((resolve) => {
        const req = httpRequest(
          { socketPath, path: `${baseUrl}api`, method: 'GET', timeout: 2000 },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          },
        );
        req.on('error', () => resolve(0));
        req.on('timeout', () => req.destroy());
        req.end();
      });
      if (status === 200) return;
    }
    await sleep(200);
  }
  throw new AgentError('jupyter-server did not come up in time');
}

/** Rewrites the hub API URL in the spawner's environment to the relay inside the container. */
export function containerEnv(
  env: Record<string, string>,
  relayPort: number,
): Record<string, string> {
  const hubApi = env.JUPYTERHUB_API_URL;
  if (!hubApi) return { ...env };
  const origin = new URL(hubApi).origin;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    // jupyterhub-singleuser insists on a service URL and turns its port into --port, which
    // jupyter-server accepts beside --sock only when it is the default 8888. It binds only the
    // socket; the URL merely has to keep the path.
    if (k === 'JUPYTERHUB_SERVICE_URL') {
      out[k] = `http://127.0.0.1:8888${new URL(v).pathname}`;
      continue;
    }
    out[k] = v.startsWith(`${origin}/`)
      ? `http://127.0.0.1:${relayPort}${v.slice(origin.length)}`
      : v;
  }
  return out;
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function rmdirSafe(dir: string): void {
  try {
    rmdirSync(dir);
  } catch {
    // already gone
  }
}

export class JobAgent {
  private runtime: ChildProcess | undefined;
  private server: Server | undefined;
  private relay: Server | undefined;
  private desktop: DesktopProxy | undefined;
  private trefs: TrefsMount | undefined;
  private workDir: string | undefined;
  private stopping = false;

  constructor(private readonly o: AgentOptions) {}

  /** Runs the session to its end; resolves with the exit code for the batch job. */
  async run(): Promise<number> {
    const log = this.o.logger;
    const { config, kek } = await collectPickup(this.o);
    log.info(
      { event: 'pickup', session: config.sessionId, project: config.project },
      'collected the session',
    );
    try {
      const port = await this.setUp(config, kek);
      await report(this.o, config.agentSecret, {
        host: config.session.advertiseHost ?? hostname(),
        port,
      });
      log.info({ event: 'ready', port }, 'session ready');
    } catch (err) {
      const message = err instanceof AgentError ? err.message : `agent failed: ${String(err)}`;
      log.error({ event: 'failed', err: message }, 'session failed to start');
      await report(this.o, config.agentSecret, { error: message }).catch(() => undefined);
      await this.shutdown();
      return 1;
    }
    const code = await new Promise<number>((resolve) => {
      if (!this.runtime || this.runtime.exitCode !== null)
        return resolve(this.runtime?.exitCode ?? 1);
      this.runtime.once('exit', (c, signal) => resolve(c ?? (signal ? 128 : 1)));
    });
    log.info({ event: 'container-exit', code }, 'the container exited');
    await this.shutdown();
    return this.stopping ? 0 : code;
  }

  private async setUp(config: PickupConfig, kek: Buffer | null): Promise<number> {
    const log = this.o.logger;
    const s = config.session;
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(config.project)) {
      kek?.fill(0);
      throw new AgentError('invalid project name');
    }
    if (!s.trefs) kek?.fill(0);
    const workRoot = s.workRoot ?? tmpdir();
    mkdirSync(workRoot, { recursive: true });
    this.workDir = mkdtempSync(join(workRoot, 'tre-job-'));
    const runDir = join(this.workDir, 'run');
    mkdirSync(runDir, { mode: 0o700 });
    let dataDir: string;
    if (s.trefs) {
      if (!kek) throw new AgentError("the project's data needs your key: unlock it to start");
      dataDir = join(this.workDir, 'data', config.project);
      mkdirSync(dataDir, { recursive: true, mode: 0o700 });
      this.trefs = await TrefsMount.start({
        settings: s.trefs,
        project: config.project,
        cipherDir: cipherDirOf(s.trefs, config.project),
        mountpoint: dataDir,
        kek,
        kmsToken: config.env.JUPYTERHUB_API_TOKEN,
        // The lab's filing, grants and review go through it (jupyterlab-tre's README).
        keyAgentSocket: join(runDir, 'key-agent.sock'),
        log,
      });
      this.trefs.onExit(() => {
        if (this.stopping) return;
        log.error({ event: 'trefs-exit' }, 'trefs stopped: ending the session');
        this.runtime?.kill('SIGTERM');
      });
    } else {
      dataDir = join(s.dataRoot ?? join(this.workDir, 'data'), config.project);
      if (!existsSync(dataDir))
        throw new AgentError(`no data directory for project ${config.project}`);
    }

    const hubApi = config.env.JUPYTERHUB_API_URL;
    if (!hubApi) throw new AgentError('the spawner passed no JUPYTERHUB_API_URL');
    const kmsUrl = s.kmsUrl ?? s.trefs?.kmsUrl;
    this.relay = createHubRelay(hubApi, log, kmsUrl?.startsWith('http') ? kmsUrl : undefined);
    await listenUnix(this.relay, join(runDir, 'hub.sock'));

    this.desktop = createDesktopProxy({
      target: `unix:${join(runDir, 'vnc.sock')}`,
      auth: hubAuthenticator({ hubApi, user: config.user }),
      allowedOrigins: s.allowedOrigins ?? [],
      logger: log.child({ component: 'desktop' }),
    });

    const relayPort = 8081;
    const env: Record<string, string> = {
      ...containerEnv(config.env, relayPort),
      PATH: [...(s.pathPrepend ?? []), '/usr/local/bin', '/usr/bin', '/bin'].join(':'),
      USER: config.user,
      LANG: 'C.UTF-8',
      TRE_PROJECT: config.project,
      TRE_DATA_DIR: `/data/${config.project}`,
      TRE_ROOT_DIR: `/data/${config.project}`,
      TRE_HUB_RELAY_PORT: String(relayPort),
    };
    this.runtime = this.startRuntime(s, runDir, dataDir, config.project, env);

    const jupyterSock = join(runDir, 'jupyter.sock');
    const port = await this.listen(config, jupyterSock, s.listenHost ?? '0.0.0.0');
    const deadline = Date.now() + (s.readyTimeoutSeconds ?? 120) * 1000;
    await waitForJupyter(
      jupyterSock,
      config.baseUrl,
      deadline,
      () => this.runtime?.exitCode === null,
    );
    return port;
  }

  private startRuntime(
    s: SessionSettings,
    runDir: string,
    dataDir: string,
    project: string,
    env: Record<string, string>,
  ): ChildProcess {
    let argv: string[];
    if ((s.runtime ?? 'bwrap') === 'apptainer') {
      if (!s.image) throw new AgentError('the apptainer runtime needs an image');
      argv = [
        join(PACKAGE_ROOT, 'runtime', 'apptainer-run'),
        '--image',
        s.image,
        '--run-dir',
        runDir,
        '--data-dir',
        dataDir,
        '--project',
        project,
        '--',
        '/opt/tre/entrypoint/tre-entrypoint',
      ];
    } else {
      const entrypointDir = join(PACKAGE_ROOT, 'entrypoint');
      argv = [
        join(PACKAGE_ROOT, 'runtime', 'bwrap-run'),
        '--run-dir',
        runDir,
        '--data-dir',
        dataDir,
        '--project',
        project,
        ...[entrypointDir, ...(s.readOnlyPaths ?? [])].flatMap((p) => ['--ro', p]),
        '--',
        join(entrypointDir, 'tre-entrypoint'),
      ];
    }
    const child = spawn(argv[0] as string, argv.slice(1), {
      env,
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    child.on('error', (err) =>
      this.o.logger.error(
        { event: 'runtime-error', err: err.message },
        'cannot start the container',
      ),
    );
    return child;
  }

  private async listen(config: PickupConfig, jupyterSock: string, host: string): Promise<number> {
    const log = this.o.logger;
    const expected = digest(config.agentSecret);
    const jupyter = httpProxy.createProxyServer({
      target: { socketPath: jupyterSock } as never,
      ws: true,
    });
    jupyter.on('error', (err, _req, res) => {
      log.warn(
        { event: 'jupyter-proxy-error', err: (err as NodeJS.ErrnoException).code ?? err.message },
        'jupyter-server unreachable',
      );
      if (res && 'writeHead' in res) {
        const r = res as ServerResponse;
        if (!r.headersSent) r.writeHead(502);
        r.end();
      } else {
        (res as Duplex | undefined)?.destroy();
      }
    });
    const desktopPrefix = `${config.baseUrl}desktop`;
    const desktop = this.desktop as DesktopProxy;

    const authorised = (req: IncomingMessage): boolean => {
      const given = req.headers[AGENT_SECRET_HEADER];
      delete req.headers[AGENT_SECRET_HEADER];
      return typeof given === 'string' && timingSafeEqual(digest(given), expected);
    };
    // The desktop proxy serves its page at / and the WebSocket at /websockify.
    const desktopPath = (req: IncomingMessage): string | undefined => {
      const url = req.url ?? '/';
      if (url === desktopPrefix || url.startsWith(`${desktopPrefix}?`)) return '';
      if (url.startsWith(`${desktopPrefix}/`)) return url.slice(desktopPrefix.length);
      return undefined;
    };

    const server = createServer((req, res) => {
      if (!authorised(req)) {
        res.writeHead(403, { 'Content-Type': 'text/plain' });
        res.end('forbidden\n');
        return;
      }
      const d = desktopPath(req);
      if (d === '') {
        res.writeHead(302, { Location: `${desktopPrefix}/` });
        res.end();
      } else if (d !== undefined) {
        req.url = d;
        desktop.handleRequest(req, res);
      } else {
        jupyter.web(req, res);
      }
    });
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      socket.on('error', () => socket.destroy());
      if (!authorised(req)) {
        socket.end('HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\n');
        return;
      }
      const d = desktopPath(req);
      if (d) {
        req.url = d;
        desktop.handleUpgrade(req, socket, head);
      } else {
        jupyter.ws(req, socket, head);
      }
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, host, () => resolve());
    });
    this.server = server;
    return (server.address() as AddressInfo).port;
  }

  /** Ends the session: container, listeners, the job's directory. Safe to call twice. */
  async shutdown(): Promise<void> {
    this.stopping = true;
    const rt = this.runtime;
    if (rt && rt.exitCode === null && rt.signalCode === null) {
      rt.kill('SIGTERM');
      await Promise.race([new Promise((r) => rt.once('exit', r)), sleep(5000)]);
      if (rt.exitCode === null && rt.signalCode === null) rt.kill('SIGKILL');
    }
    await this.desktop?.close();
    for (const s of [this.server, this.relay]) {
      if (!s) continue;
      await new Promise<void>((resolve) => {
        s.close(() => resolve());
        s.closeAllConnections();
      });
    }
    this.server = undefined;
    this.relay = undefined;
    const clean = (await this.trefs?.unmount()) ?? true;
    this.trefs = undefined;
    if (this.workDir && clean) {
      // Never recursive through the data mountpoint: only the sockets and the empty directories.
      rmSync(join(this.workDir, 'run'), { recursive: true, force: true });
      for (const d of readdirSafe(join(this.workDir, 'data'))) {
        rmdirSafe(join(this.workDir, 'data', d));
      }
      for (const d of ['data', '']) rmdirSafe(join(this.workDir, d));
    }
    this.workDir = undefined;
  }
}
