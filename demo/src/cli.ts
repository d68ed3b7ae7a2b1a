#!/usr/bin/env node
/**
 * `tre-demo`: the whole TRE on one machine, in the foreground. Ctrl-C (SIGINT) or SIGTERM stops
 * every part; a second start reuses the state folder.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import {
  bridgeYaml,
  CONSOLE_PATH,
  hubConfig,
  hubPageTemplate,
  kmsYaml,
  sessionConfigDir,
  sessionLabConfig,
} from './configs.js';
import { Hub, prepareSecrets, seed } from './seed.js';
import { DEMO_USERS, OPERATOR, PROJECT, REPO, settings, type Settings } from './settings.js';
import {
  childrenOf,
  cmdlineOf,
  PidFile,
  startTimeOf,
  stillRunning,
  stopForeignGroup,
  stopRecorded,
  Supervisor,
} from './supervisor.js';

const EXIT = { ok: 0, failed: 1, usage: 2, setup: 3 } as const;

const HELP = `Usage: tre-demo [options]   (scripts/run-local and scripts/quickstart run call this)

Runs the whole TRE on this machine with embedded defaults: JupyterHub with three demo users,
the KMS as a hub service, the ingress service, the spawner bridge and sessions. Seeds a
consented demo project, key files for the demo users and a synthetic dataset, then prints the
URL and the logins. Ctrl-C stops everything; the next start reuses the state.

Options:
  --state <dir>   state folder (default: .tre-demo in the repository; env TRE_DEMO_STATE)
  --port <n>      first of seven loopback ports (default 8700; env TRE_DEMO_PORT):
                  n hub, n+1 hub API, n+2 proxy API, n+3 KMS, n+4 ingress, n+5 bridge, n+6 gateway
  --slurm         run sessions on the running Slurm (SLURM_CONF, default /tmp/tre-slurm/slurm.conf)
                  instead of as local processes
  -V, --version   print the version
  -h, --help      show this help

Exit codes: 0 stopped cleanly, 1 a part failed, 2 usage error, 3 cannot start (port in use,
missing build). The demo logins are for this machine only, never for production.
`;

function version(): string {
  return (
    JSON.parse(readFileSync(join(REPO, 'demo', 'package.json'), 'utf8')) as { version: string }
  ).version;
}

function log(m: string): void {
  process.stdout.write(`tre-demo: ${m}\n`);
}

async function portFree(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = createServer();
    s.once('error', () => res(false));
    s.listen(port, '127.0.0.1', () => s.close(() => res(true)));
  });
}

async function waitFor(what: string, url: string, isAlive: () => boolean, ms = 120_000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!isAlive()) throw new Error(`${what} exited while starting`);
    try {
      const res = await fetch(url);
      await res.body?.cancel();
      if (res.status < 500) return;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error(`${what} did not answer at ${url} within ${ms / 1000} s`);
}

/**
 * Local session jobs are process groups of their own; stop any the hub left behind. The bridge
 * records each job's pid with its start time: a pid reused since is never signalled.
 */
async function stopLocalJobs(s: Settings): Promise<void> {
  const dbPath = join(s.state, 'bridge', 'bridge.sqlite');
  if (!existsSync(dbPath)) return;
  let rows: Array<{ id: string; executor: string; executor_data: string | null }> = [];
  const db = new Database(dbPath, { readonly: true, fileMustExist: true });
  try {
    rows = db.prepare('SELECT id, executor, executor_data FROM sessions').all() as typeof rows;
  } finally {
    db.close();
  }
  for (const r of rows) {
    if (r.executor !== 'local' || !r.executor_data) continue;
    let job: { pid?: unknown; startTime?: unknown };
    try {
      job = JSON.parse(r.executor_data) as typeof job;
    } catch {
      continue;
    }
    if (typeof job.pid !== 'number' || typeof job.startTime !== 'string') continue;
    if (startTimeOf(job.pid) !== job.startTime) continue;
    // The job's shell, or the job agent it became (the batch script execs it).
    const cmd = cmdlineOf(job.pid) ?? '';
    if (cmd === '/bin/bash\0-s' || cmd.includes(`\0--session\0${r.id}`)) {
      log(`stopping the session job ${job.pid} that was left running`);
      await stopForeignGroup(job.pid);
    }
  }
}

/** FUSE mounts under the state folder that a killed session left behind (dead trefs daemons). */
function detachLeftoverMounts(s: Settings): string[] {
  const left = readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[1] ?? '')
    .map((p) => p.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((p) => p.startsWith(`${s.state}/`));
  for (const m of left) spawnSync('fusermount', ['-u', '-z', m], { stdio: 'ignore' });
  return left;
}

/**
 * What a killed run left: its children (recorded in the pid file with their command lines and
 * start times), their session jobs and mounts. Refuses when that run is still alive.
 */
async function stopPreviousRun(s: Settings, pidFile: PidFile): Promise<void> {
  const previous = pidFile.read();
  if (!previous) return;
  if (stillRunning(previous.demo)) {
    throw new SetupError(
      `the demo is already running with the state ${s.state} (pid ${previous.demo.pid}); stop it first`,
    );
  }
  const left = [...previous.children].reverse().filter(stillRunning);
  if (left.length > 0) {
    log(
      `stopping what a previous run left: ${left.map((r) => `${r.name} (pid ${r.pid})`).join(', ')}`,
    );
  }
  for (const r of left) await stopRecorded(r, 30_000);
  await stopLocalJobs(s);
  const mounts = detachLeftoverMounts(s);
  if (mounts.length > 0) log(`detached ${mounts.length} mount(s) a previous run left`);
  pidFile.remove();
}

class SetupError extends Error {}

function banner(s: Settings, logins: Record<string, string>, passphrases: Record<string, string>) {
  const url = `http://127.0.0.1:${s.ports.hub}/`;
  const lines = [
    '',
    `The TRE is running at ${url}`,
    `The TRE console (data owners, PIs, reviewers): http://127.0.0.1:${s.ports.hub}${CONSOLE_PATH}`,
    "  sign in there with a hub API token (the hub's Token page)",
    '',
    'Demo logins (this machine only, never for production):',
    ...DEMO_USERS.map(
      (u) =>
        `  ${u.name.padEnd(11)} password ${logins[u.name]}   key passphrase ${passphrases[u.name]}   (${u.title})`,
    ),
    `  ${OPERATOR.padEnd(11)} password ${logins[OPERATOR]}   (hub admin: trainings, users)`,
    '',
    `Project "${PROJECT}": consented by dataowner, synthetic dataset confirmed by pi.`,
    `Sessions: ${s.executor === 'slurm' ? `Slurm (${s.slurmConf})` : 'local processes (--slurm for Slurm)'}`,
    `Ports: hub ${s.ports.hub}, hub API ${s.ports.hubInternal}, proxy API ${s.ports.proxyApi}, KMS ${s.ports.kms}, ingress ${s.ports.ingress}, bridge ${s.ports.bridge}, gateway ${s.ports.gateway}`,
    `State: ${s.state}   logs: ${join(s.state, 'logs')}`,
    '',
    'Ctrl-C stops everything.',
    '',
  ];
  process.stdout.write(lines.join('\n') + '\n');
}

async function main(argv: string[]): Promise<number> {
  let args;
  try {
    args = parseArgs({
      args: argv,
      options: {
        state: { type: 'string' },
        port: { type: 'string' },
        slurm: { type: 'boolean', default: false },
        version: { type: 'boolean', short: 'V', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (err) {
    process.stderr.write(`tre-demo: ${(err as Error).message}\n${HELP}`);
    return EXIT.usage;
  }
  if (args.help) {
    process.stdout.write(HELP);
    return EXIT.ok;
  }
  if (args.version) {
    process.stdout.write(`${version()}\n`);
    return EXIT.ok;
  }
  const portText = args.port ?? process.env.TRE_DEMO_PORT;
  let s: Settings;
  try {
    const port = portText === undefined ? undefined : Number(portText);
    if (port !== undefined && !/^\d+$/.test(portText ?? ''))
      throw new Error(`--port must be a number, got "${portText}"`);
    s = settings({
      state: args.state ?? process.env.TRE_DEMO_STATE,
      ...(port !== undefined ? { port } : {}),
      slurm: args.slurm,
    });
  } catch (err) {
    process.stderr.write(`tre-demo: ${(err as Error).message}\n`);
    return EXIT.usage;
  }
  for (const f of ['kms-service', 'uploader', 'hub-spawner-bridge', 'container']) {
    if (!existsSync(join(REPO, f, 'dist'))) {
      process.stderr.write(`tre-demo: ${f} is not built; run scripts/quickstart run\n`);
      return EXIT.setup;
    }
  }
  const pidFile = new PidFile(join(s.state, 'pids.json'));
  try {
    await stopPreviousRun(s, pidFile);
  } catch (err) {
    process.stderr.write(`tre-demo: ${(err as Error).message}\n`);
    return err instanceof SetupError ? EXIT.setup : EXIT.failed;
  }
  for (const [name, port] of Object.entries(s.ports)) {
    if (!(await portFree(port))) {
      process.stderr.write(
        `tre-demo: port ${port} (${name}) is in use; is the demo running already? Choose others with --port\n`,
      );
      return EXIT.setup;
    }
  }
  const reuse = existsSync(join(s.state, 'secrets'));
  log(reuse ? `reusing the state in ${s.state}` : `new state in ${s.state}`);
  for (const d of ['hub/templates', 'kms', 'ingress', 'bridge/jobs', 'logs']) {
    mkdirSync(join(s.state, d), { recursive: true, mode: 0o700 });
  }
  // Sessions run as nobody inside bubblewrap: their settings must be readable, nothing more.
  mkdirSync(sessionConfigDir(s), { recursive: true, mode: 0o755 });
  const secrets = prepareSecrets(s);
  writeFileSync(join(s.state, 'kms', 'kms.yaml'), kmsYaml(s), { mode: 0o600 });
  writeFileSync(join(s.state, 'bridge', 'bridge.yaml'), bridgeYaml(s), { mode: 0o600 });
  writeFileSync(join(s.state, 'hub', 'jupyterhub_config.py'), hubConfig(s), { mode: 0o600 });
  writeFileSync(join(s.state, 'hub', 'templates', 'page.html'), hubPageTemplate(), { mode: 0o600 });
  writeFileSync(join(sessionConfigDir(s), 'jupyter_server_config.json'), sessionLabConfig(s), {
    mode: 0o644,
  });

  const sup = new Supervisor(pidFile);
  const logs = join(s.state, 'logs');
  let stopping: Promise<number> | null = null;
  const stop = (code: number): Promise<number> => {
    stopping ??= (async () => {
      log('stopping...');
      await sup.stopAll();
      await stopLocalJobs(s);
      log('stopped');
      return code;
    })();
    return stopping;
  };
  sup.onUnexpectedExit = (c, code) => {
    process.stderr.write(`tre-demo: ${c.name} exited (${code}); see ${c.log}\n`);
    void stop(EXIT.failed).then((c2) => process.exit(c2));
  };
  process.on('SIGINT', () => void stop(EXIT.ok).then((c) => process.exit(c)));
  process.on('SIGTERM', () => void stop(EXIT.ok).then((c) => process.exit(c)));

  const uploaderCli = join(REPO, 'uploader', 'dist', 'cli.js');
  const kmsUrl = `http://127.0.0.1:${s.ports.kms}`;
  try {
    const ingress = sup.start(
      'ingress',
      [
        s.node,
        uploaderCli,
        'ingress',
        'serve',
        '--root',
        join(s.state, 'ingress'),
        '--kms',
        kmsUrl,
        '--service-token-file',
        join(s.state, 'secrets', 'ingress-service-token'),
        '--port',
        String(s.ports.ingress),
      ],
      { cwd: join(s.state, 'ingress'), log: join(logs, 'ingress.log') },
    );
    const bridge = sup.start(
      'bridge',
      [s.node, join(REPO, 'hub-spawner-bridge', 'dist', 'cli.js'), 'serve', '-c', 'bridge.yaml'],
      { cwd: join(s.state, 'bridge'), log: join(logs, 'bridge.log') },
    );
    // Stopped last among the three, so the hub still reaches the bridge while it stops servers.
    const hub = sup.start(
      'jupyterhub',
      // Through the venv's python rather than the script's #! line, so that the recorded
      // command line is the one /proc shows.
      [
        join(s.venv, 'bin', 'python3'),
        join(s.venv, 'bin', 'jupyterhub'),
        '-f',
        'jupyterhub_config.py',
      ],
      {
        cwd: join(s.state, 'hub'),
        log: join(logs, 'jupyterhub.log'),
        env: { PATH: `${join(s.venv, 'bin')}:${process.env.PATH ?? ''}` },
      },
    );
    const alive = (c: { proc: { exitCode: number | null } }) => () => c.proc.exitCode === null;
    await waitFor(
      'the ingress service',
      `http://127.0.0.1:${s.ports.ingress}/healthz`,
      alive(ingress),
    );
    await waitFor('the bridge', `http://127.0.0.1:${s.ports.bridge}/api/v1/health`, alive(bridge));
    await waitFor('JupyterHub', `http://127.0.0.1:${s.ports.hubInternal}/hub/api/`, alive(hub));
    await waitFor('the KMS', `${kmsUrl}/healthz`, alive(hub));
    // The hub's proxy and its managed KMS are the hub's children, the KMS in a session of its
    // own: recorded too, so that a killed run's KMS is found again.
    for (const pid of childrenOf(hub.proc.pid as number)) {
      const cmd = cmdlineOf(pid) ?? '';
      const name = cmd.includes('kms-service')
        ? 'kms'
        : cmd.includes('configurable-http-proxy')
          ? 'proxy'
          : 'hub-child';
      sup.adopt(name, pid);
    }
    log('all services answer; seeding');
    const demoToken = readFileSync(join(s.state, 'secrets', 'demo-service-token'), 'utf8').trim();
    await seed(
      s,
      new Hub(`http://127.0.0.1:${s.ports.hubInternal}/hub/api`, demoToken),
      secrets,
      log,
    );
  } catch (err) {
    process.stderr.write(`tre-demo: ${(err as Error).message}\n`);
    return stop(EXIT.failed);
  }
  banner(s, secrets.logins, secrets.passphrases);
  return new Promise<number>(() => {});
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`tre-demo: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(EXIT.failed);
  },
);
