/**
 * `npm run bench [-- --runs 5]`: time from the hub's POST start to JupyterLab answering through
 * the hub, on the local one-node Slurm (scripts/slurm-local), for
 *   - TRE: JupyterHub + TreSpawner + the bridge + job agent + bubblewrap container (jupyter-server
 *     and Xvnc on unix sockets), and
 *   - batchspawner 1.3 (SlurmSpawner) starting a plain jupyterhub-singleuser, in its own venv
 *     (made at .tre-state/batchspawner-venv on the first run: pip install batchspawner==1.3.0),
 * alternating, median of the runs each; prints the TRE session's phases from the bridge's events.
 * Environment: TRE_BENCH_VENV (the TRE venv, default .venv), TRE_BENCH_BS_VENV, BENCH_SMOKE=1 (one
 * run each without warm-up, whatever --runs says: it shows the bench works, its numbers mean
 * nothing).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir, loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const PKG = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const REPO = resolve(PKG, '..');
const VENV = process.env.TRE_BENCH_VENV ?? join(REPO, '.venv');
const BS_VENV = process.env.TRE_BENCH_BS_VENV ?? join(REPO, '.tre-state', 'batchspawner-venv');
const SLURM_CONF = join(process.env.TRE_SLURM_DIR ?? '/tmp/tre-slurm', 'slurm.conf');
const CHP = join(REPO, 'node_modules', '.bin', 'configurable-http-proxy');

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? Number(process.argv[i + 1]) : fallback;
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${name} must be a positive integer`);
  return v;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, ms: number, every = 100) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch {
      // not yet
    }
    await sleep(every);
  }
  throw new Error(`timed out waiting for ${what}`);
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): string {
  return execFileSync(cmd, args, { encoding: 'utf8', env: { ...process.env, ...env } });
}

function start(
  argv: string[],
  cwd: string,
  log: string,
  env: NodeJS.ProcessEnv = {},
): ChildProcess {
  const out = createWriteStream(log);
  const c = spawn(argv[0] as string, argv.slice(1), {
    cwd,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  c.stdout?.pipe(out);
  c.stderr?.pipe(out);
  return c;
}

async function stop(c: ChildProcess | undefined) {
  if (!c || c.exitCode !== null || c.signalCode !== null) return;
  c.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    new Promise((r) => c.once('exit', r)),
    new Promise((r) => (timer = setTimeout(r, 10_000))),
  ]);
  clearTimeout(timer);
  if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
}

function ensureBatchspawnerVenv() {
  if (existsSync(join(BS_VENV, 'bin', 'batchspawner-singleuser'))) return;
  process.stdout.write(`making ${BS_VENV} (batchspawner 1.3.0, JupyterHub, JupyterLab)...\n`);
  mkdirSync(dirname(BS_VENV), { recursive: true });
  run('python3', ['-m', 'venv', BS_VENV]);
  execFileSync(
    join(BS_VENV, 'bin', 'pip'),
    [
      'install',
      '-q',
      '--disable-pip-version-check',
      'batchspawner==1.3.0',
      'jupyterhub>=5.3,<7',
      'jupyterlab>=4.4,<5',
    ],
    { stdio: 'inherit' },
  );
}

function pythonBasePrefix(venv: string): string {
  return run(join(venv, 'bin', 'python'), ['-c', 'import sys; print(sys.base_prefix)']).trim();
}

interface Hub {
  url: string;
  admin: string;
  proc: ChildProcess;
  others: ChildProcess[];
  dir: string;
  bridgeApi?: { url: string; token: string };
}

function hubConfig(o: {
  dir: string;
  url: string;
  hubPort: number;
  proxyPort: number;
  admin: string;
  spawner: string;
}): string {
  return `c = get_config()
c.JupyterHub.bind_url = '${o.url}'
c.JupyterHub.hub_bind_url = 'http://127.0.0.1:${o.hubPort}'
c.JupyterHub.db_url = 'sqlite:///${o.dir}/hub.sqlite'
c.JupyterHub.cookie_secret_file = '${o.dir}/cookie_secret'
c.JupyterHub.authenticator_class = 'dummy'
c.Authenticator.allow_all = True
c.ConfigurableHTTPProxy.command = ['${CHP}']
c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:${o.proxyPort}'
c.Spawner.start_timeout = 300
c.Spawner.http_timeout = 120
c.JupyterHub.load_roles = [{'name': 'bench', 'scopes': ['admin:users', 'admin:servers', 'tokens', 'access:servers'], 'services': ['bench']}]
c.JupyterHub.services = [{'name': 'bench', 'api_token': '${o.admin}'}]
${o.spawner}
`;
}

async function startHub(dir: string, venv: string, spawner: (hubPort: number) => string) {
  const [port, hubPort, proxyPort] = [await freePort(), await freePort(), await freePort()];
  const url = `http://127.0.0.1:${port}`;
  const admin = randomBytes(24).toString('hex');
  writeFileSync(
    join(dir, 'jupyterhub_config.py'),
    hubConfig({ dir, url, hubPort, proxyPort, admin, spawner: spawner(hubPort) }),
  );
  const proc = start(
    [join(venv, 'bin', 'jupyterhub'), '-f', 'jupyterhub_config.py'],
    dir,
    join(dir, 'hub.log'),
    {
      PATH: `${join(venv, 'bin')}:${process.env.PATH}`,
    },
  );
  const hub: Hub = { url, admin, proc, others: [], dir };
  try {
    await waitFor(
      'the hub',
      async () => ((await api(hub, 'GET', '/')).status === 200 ? true : undefined),
      120_000,
      500,
    );
  } catch (err) {
    await stop(proc);
    throw err;
  }
  return hub;
}

async function api(h: Hub, method: string, path: string, body?: unknown) {
  const res = await fetch(`${h.url}/hub/api${path}`, {
    method,
    headers: { Authorization: `token ${h.admin}` },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as unknown) : null };
}

function jobsNamed(prefix: string, dir: string): string[] {
  return run('squeue', ['--noheader', '--format=%i|%j|%Z'], { SLURM_CONF })
    .split('\n')
    .map((l) => l.trim().split('|'))
    .filter(([, name, wd]) => name?.startsWith(prefix) && wd === dir)
    .map(([id]) => id as string);
}

/** One start: POST, then GET /user/<u>/lab through the hub until it answers 200. */
async function once(h: Hub, user: string, body: unknown, jobPrefix: string): Promise<number> {
  const { token } = (await api(h, 'POST', `/users/${user}/tokens`, {})).body as { token: string };
  const t0 = performance.now();
  const r = await api(h, 'POST', `/users/${user}/server`, body);
  if (r.status !== 201 && r.status !== 202)
    throw new Error(`start failed: ${r.status} ${JSON.stringify(r.body)}`);
  await waitFor(
    'JupyterLab through the hub',
    async () => {
      const res = await fetch(`${h.url}/user/${user}/lab`, {
        headers: { Authorization: `token ${token}` },
        redirect: 'manual',
      });
      await res.body?.cancel();
      return res.status === 200 ? true : undefined;
    },
    300_000,
    100,
  );
  const seconds = (performance.now() - t0) / 1000;
  await api(h, 'DELETE', `/users/${user}/server`);
  await waitFor(
    'the server to stop',
    async () => {
      const u = (await api(h, 'GET', `/users/${user}`)).body as {
        servers?: Record<string, unknown>;
      };
      return Object.keys(u.servers ?? {}).length === 0 ? true : undefined;
    },
    120_000,
    250,
  );
  await waitFor(
    'the job to leave the queue',
    async () => (jobsNamed(jobPrefix, h.dir).length === 0 ? true : undefined),
    120_000,
    250,
  );
  return seconds;
}

async function treHub(base: string): Promise<Hub> {
  const dir = mkdtempSync(join(base, 'tre-'));
  const token = randomBytes(32).toString('base64url');
  writeFileSync(join(dir, 'token'), token, { mode: 0o600 });
  mkdirSync(join(dir, 'data', 'bench'), { recursive: true });
  writeFileSync(
    join(dir, 'policy.yaml'),
    `agreementVersion: "1"
people:
  bench:
    agreementVersion: "1"
    trainings:
      - { kind: hpc, expiresAt: "2099-01-01T00:00:00Z" }
      - { kind: data_awareness, expiresAt: "2099-01-01T00:00:00Z" }
      - { kind: tre_rules, expiresAt: "2099-01-01T00:00:00Z" }
projects:
  bench:
    consented: true
    members:
      bench: { role: researcher }
`,
  );
  const [apiPort, gatewayPort] = [await freePort(), await freePort()];
  const agent = `${process.execPath} ${join(REPO, 'container', 'dist', 'job-agent-cli.js')}`;
  writeFileSync(
    join(dir, 'bridge.yaml'),
    [
      `listen: { host: 127.0.0.1, port: ${apiPort} }`,
      `gateway: { host: 127.0.0.1, port: ${gatewayPort} }`,
      'database: bridge.sqlite',
      'apiTokenFile: token',
      'executor: slurm',
      `slurm: { env: { SLURM_CONF: ${JSON.stringify(SLURM_CONF)} } }`,
      'logDir: logs',
      `agentCommand: ${JSON.stringify(agent)}`,
      'policy: { file: policy.yaml }',
      'session:',
      `  dataRoot: ${JSON.stringify(join(dir, 'data'))}`,
      `  workRoot: ${JSON.stringify(join(dir, 'jobs'))}`,
      '  listenHost: 127.0.0.1',
      '  advertiseHost: 127.0.0.1',
      `  readOnlyPaths: ${JSON.stringify([VENV, pythonBasePrefix(VENV)])}`,
      `  pathPrepend: ${JSON.stringify([join(VENV, 'bin')])}`,
    ].join('\n'),
  );
  mkdirSync(join(dir, 'logs'));
  const bridge = start(
    [process.execPath, join(PKG, 'dist', 'cli.js'), 'serve', '-c', 'bridge.yaml'],
    dir,
    join(dir, 'bridge.log'),
  );
  const bridgeUrl = `http://127.0.0.1:${apiPort}`;
  await waitFor(
    'the bridge',
    async () =>
      (await fetch(`${bridgeUrl}/api/v1/health`, { headers: { Authorization: `Bearer ${token}` } }))
        .ok
        ? true
        : undefined,
    60_000,
  );
  // A hub that does not come up must not leave the bridge running.
  const hub = await startHub(
    dir,
    VENV,
    () => `c.JupyterHub.spawner_class = 'tre'
c.TreSpawner.bridge_url = '${bridgeUrl}'
c.TreSpawner.bridge_token_file = '${dir}/token'
`,
  ).catch(async (err: unknown) => {
    await stop(bridge);
    throw err;
  });
  hub.others.push(bridge);
  hub.bridgeApi = { url: bridgeUrl, token };
  return hub;
}

async function batchspawnerHub(base: string): Promise<Hub> {
  const dir = mkdtempSync(join(base, 'bs-'));
  mkdirSync(join(dir, 'home'));
  const script = `#!/bin/bash
#SBATCH --job-name=bs-bench
#SBATCH --output=${dir}/bs-%j.log
#SBATCH --chdir=${dir}
#SBATCH --export={{keepvars}}
#SBATCH --time=60
#SBATCH --cpus-per-task=1
#SBATCH --mem=2G
export PATH=${join(BS_VENV, 'bin')}:$PATH
{{cmd}}
`;
  return startHub(
    dir,
    BS_VENV,
    () => `c.JupyterHub.spawner_class = 'batchspawner.SlurmSpawner'
c.SlurmSpawner.exec_prefix = ''
c.SlurmSpawner.batch_script = ${JSON.stringify(script)}
c.SlurmSpawner.req_homedir = '${dir}/home'
c.SlurmSpawner.batchspawner_singleuser_cmd = 'batchspawner-singleuser'
c.SlurmSpawner.cmd = ['jupyterhub-singleuser', '--allow-root']
c.SlurmSpawner.default_url = '/lab'
c.SlurmSpawner.notebook_dir = '${dir}/home'
c.BatchSpawnerBase.startup_poll_interval = 0.5
c.SlurmSpawner.environment = {'SLURM_CONF': '${SLURM_CONF}'}
c.SlurmSpawner.batch_query_cmd = "env SLURM_CONF=${SLURM_CONF} squeue -h -j {job_id} -o '%T %B'"
c.SlurmSpawner.batch_cancel_cmd = 'env SLURM_CONF=${SLURM_CONF} scancel {job_id}'
`,
  );
}

async function phases(h: Hub): Promise<string> {
  const b = h.bridgeApi;
  if (!b) return '';
  const headers = { Authorization: `Bearer ${b.token}` };
  const sessions = run(join(VENV, 'bin', 'python'), [
    '-c',
    `import sqlite3; print(sqlite3.connect('${h.dir}/bridge.sqlite').execute("select id from sessions order by created_at desc limit 1").fetchone()[0])`,
  ]).trim();
  const res = await fetch(`${b.url}/api/v1/sessions/${sessions}/events?after=0`, { headers });
  const { events } = (await res.json()) as {
    events: Array<{ at: string; state: string; message: string }>;
  };
  const t0 = Date.parse(events[0]?.at ?? '');
  return events
    .map((e) => `    +${((Date.parse(e.at) - t0) / 1000).toFixed(2)} s  ${e.state}: ${e.message}`)
    .join('\n');
}

async function main() {
  const smoke = process.env.BENCH_SMOKE === '1';
  const runs = smoke ? 1 : arg('runs', 5);
  run(join(REPO, 'scripts', 'slurm-local'), ['start']);
  ensureBatchspawnerVenv();
  const base = mkdtempSync(join(tmpdir(), 'tre-bench-sessions-'));
  const load = run('uptime', []).trim();
  process.stdout.write(
    `sessions benchmark, ${runs} runs each, ${base}${smoke ? ' (BENCH_SMOKE: a smoke run, not a measurement)' : ''}\nload: ${load}\n`,
  );
  const hubs: Hub[] = [];
  try {
    const tre = await treHub(base);
    hubs.push(tre);
    const bs = await batchspawnerHub(base);
    hubs.push(bs);
    // batchspawner looks its user up in the password database; "nobody" exists everywhere.
    const bsUser = 'nobody';
    for (const [h, u] of [
      [tre, 'bench'],
      [bs, bsUser],
    ] as const) {
      if ((await api(h, 'POST', `/users/${u}`)).status !== 201)
        throw new Error('cannot create the user');
    }
    const times = { tre: [] as number[], bs: [] as number[] };
    // One warm-up each (page cache, Python bytecode), not counted.
    if (!smoke) {
      process.stdout.write(
        `  warm-up TRE ${(await once(tre, 'bench', { project: 'bench', hours: 1 }, 'tre-')).toFixed(2)} s\n`,
      );
      await once(bs, bsUser, {}, 'bs-bench');
    }
    for (let i = 0; i < runs; i++) {
      times.tre.push(await once(tre, 'bench', { project: 'bench', hours: 1 }, 'tre-'));
      process.stdout.write(`  run ${i + 1} TRE          ${times.tre.at(-1)?.toFixed(2)} s\n`);
      if (i === runs - 1)
        process.stdout.write(`  TRE phases (bridge events):\n${await phases(tre)}\n`);
      times.bs.push(await once(bs, bsUser, {}, 'bs-bench'));
      process.stdout.write(`  run ${i + 1} batchspawner ${times.bs.at(-1)?.toFixed(2)} s\n`);
    }
    const mt = median(times.tre);
    const mb = median(times.bs);
    process.stdout.write(
      [
        '',
        '| spawner | median s | min | max |',
        '|---|---|---|---|',
        `| TRE (TreSpawner + bridge + agent + bwrap, lab + desktop) | ${mt.toFixed(2)} | ${Math.min(...times.tre).toFixed(2)} | ${Math.max(...times.tre).toFixed(2)} |`,
        `| batchspawner 1.3 SlurmSpawner, plain jupyterhub-singleuser | ${mb.toFixed(2)} | ${Math.min(...times.bs).toFixed(2)} | ${Math.max(...times.bs).toFixed(2)} |`,
        '',
        `ratio TRE / batchspawner: ${(mt / mb).toFixed(2)} (floor: TRE < 15 s and ratio <= 1)`,
        `load after: ${run('uptime', []).trim()} (1-min ${loadavg()[0]?.toFixed(2)})`,
        '',
      ].join('\n'),
    );
  } finally {
    for (const h of hubs) {
      await stop(h.proc);
      for (const o of h.others) await stop(o);
      for (const id of [...jobsNamed('tre-', h.dir), ...jobsNamed('bs-bench', h.dir)]) {
        run('scancel', [id], { SLURM_CONF });
      }
    }
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
