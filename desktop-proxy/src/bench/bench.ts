// Benchmark of the desktop proxy against websockify, both in front of the same VNC servers in
// the same run: a synthetic RFB server (isolates proxy cost) and a real TigerVNC Xvnc.
//   npm run bench            (in desktop-proxy/)
// Options: --runs N --seconds S, --client lean|ws (the viewer's WebSocket client), --parts
// throughput,latency,memory,concurrency (a comma-separated subset). BENCH_SMOKE=1: one short
// run of each part (0.5 s, 100 round trips, 5 sessions), whatever the options say, that exits 0
// unless something broke: it shows the bench works, its numbers and verdicts mean nothing.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  leanWsTransport,
  RfbBenchClient,
  unixTransport,
  wsTransport,
  type Transport,
} from './rfb-client.js';
import { startSyntheticServer } from './synthetic-server.js';

const WIDTH = 1024;
const HEIGHT = 768;
const SMOKE = process.env.BENCH_SMOKE === '1';
const SESSIONS = SMOKE ? 5 : 50;
const LATENCY_SAMPLES = SMOKE ? 100 : 1000;
const here = dirname(fileURLToPath(import.meta.url));
const CLI = join(here, '..', 'cli.js');

type Via = 'direct' | 'desktop-proxy' | 'websockify';

interface Endpoint {
  name: string;
  socket: string;
  /** The VNC server's process (synthetic server or Xvnc). */
  serverPid: number;
  ours: { url: string; pid: number };
  websockify: { url: string; pid: number };
}

const children: ChildProcess[] = [];

function option(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}

function textOption(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i > 0 ? (process.argv[i + 1] ?? fallback) : fallback;
}

// The viewer's WebSocket client: 'lean' hands frame payloads on as slices of the socket's
// reads; 'ws' is the ws library's client, which joins every message into one buffer.
const CLIENT = textOption('--client', 'lean');
const PARTS = new Set(textOption('--parts', 'throughput,latency,memory,concurrency').split(','));

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(check: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

function track(child: ChildProcess): ChildProcess {
  children.push(child);
  return child;
}

async function startXvnc(dir: string): Promise<{ socket: string; pid: number }> {
  const socket = join(dir, 'xvnc.sock');
  for (let attempt = 0; attempt < 5; attempt++) {
    const n = 100 + Math.floor(Math.random() * 800);
    if (existsSync(`/tmp/.X${n}-lock`)) continue;
    const child = track(
      spawn(
        'Xvnc',
        [
          `:${n}`,
          '-SecurityTypes',
          'None',
          '-rfbunixpath',
          socket,
          '-rfbunixmode',
          '0600',
          '-rfbport',
          '-1',
          '-nolisten',
          'tcp',
          '-geometry',
          `${WIDTH}x${HEIGHT}`,
          '-depth',
          '24',
          '-AcceptCutText=0',
          '-SendCutText=0',
          '-SendPrimary=0',
          '-SetPrimary=0',
          '-noclipboard',
          '-AllowOverride=desktop',
          '-BlacklistThreshold=1000000',
        ],
        { stdio: 'ignore' },
      ),
    );
    try {
      await waitFor(() => existsSync(socket) || child.exitCode !== null, 'Xvnc');
    } catch {
      child.kill('SIGKILL');
    }
    if (existsSync(socket)) return { socket, pid: child.pid as number };
  }
  throw new Error('Xvnc did not start');
}

async function startOurs(socket: string): Promise<{ url: string; pid: number }> {
  const child = track(
    spawn(
      process.execPath,
      [
        CLI,
        '--listen',
        '127.0.0.1:0',
        '--target',
        `unix:${socket}`,
        '--insecure-no-auth',
        '--max-connections',
        String(SESSIONS * 2),
        '--idle-timeout',
        '0',
      ],
      { stdio: ['ignore', 'pipe', 'ignore'] },
    ),
  );
  let out = '';
  let port = 0;
  child.stdout?.setEncoding('utf8').on('data', (d: string) => {
    if (port) return;
    out += d;
    const line = out.split('\n').find((l) => l.includes('"event":"listening"'));
    if (line) port = (JSON.parse(line) as { port: number }).port;
  });
  await waitFor(() => port > 0, 'desktop-proxy to listen');
  return { url: `ws://127.0.0.1:${port}/websockify`, pid: child.pid as number };
}

async function startWebsockify(socket: string): Promise<{ url: string; pid: number }> {
  const port = await freePort();
  const child = track(
    spawn('websockify', [`127.0.0.1:${port}`, `--unix-target=${socket}`], { stdio: 'ignore' }),
  );
  await waitFor(
    () =>
      new Promise<boolean>((resolve) => {
        const probe = createServer();
        probe.once('error', () => resolve(true));
        probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(false)));
      }),
    'websockify to listen',
  );
  return { url: `ws://127.0.0.1:${port}/websockify`, pid: child.pid as number };
}

function transport(endpoint: Endpoint, via: Via): Promise<Transport> {
  if (via === 'direct') return unixTransport(endpoint.socket);
  const url = via === 'desktop-proxy' ? endpoint.ours.url : endpoint.websockify.url;
  return CLIENT === 'ws' ? wsTransport(url) : leanWsTransport(url);
}

async function session(endpoint: Endpoint, via: Via): Promise<RfbBenchClient> {
  const client = new RfbBenchClient(await transport(endpoint, via));
  await client.handshake();
  return client;
}

/**
 * MB/s of full-screen Raw updates, one request outstanding as a viewer runs, and the proxy's
 * own CPU time per MB (a figure that background load on the machine disturbs far less).
 */
async function throughput(endpoint: Endpoint, via: Via, seconds: number) {
  const pid = via === 'desktop-proxy' ? endpoint.ours.pid : endpoint.websockify.pid;
  const client = await session(endpoint, via);
  for (let i = 0; i < 3; i++) await client.update();
  const start = client.bytesReceived;
  const frames0 = client.t.frames?.() ?? 0;
  const cpu0 = via === 'direct' ? 0 : cpuTree(pid);
  const server0 = cpuTree(endpoint.serverPid);
  const viewer0 = process.cpuUsage();
  const t0 = performance.now();
  while (performance.now() - t0 < seconds * 1000) await client.update();
  const bytes = client.bytesReceived - start;
  const mb = bytes / 1e6;
  const rate = mb / ((performance.now() - t0) / 1000);
  const viewer = process.cpuUsage(viewer0);
  const cpuMsPerMb = via === 'direct' ? 0 : ((cpuTree(pid) - cpu0) * 1000) / mb;
  const serverMsPerMb = ((cpuTree(endpoint.serverPid) - server0) * 1000) / mb;
  const viewerMsPerMb = (viewer.user + viewer.system) / 1000 / mb;
  const frames = (client.t.frames?.() ?? 0) - frames0;
  const frameKb = frames > 0 ? bytes / frames / 1024 : 0;
  client.close();
  return { rate, cpuMsPerMb, serverMsPerMb, viewerMsPerMb, frameKb };
}

/**
 * Round trips of a 1x1 FramebufferUpdateRequest and its 20-byte answer, in microseconds, for
 * every path at once: one session each, and the samples taken in turns (direct, ours,
 * websockify, in a rotating order), so that a burst of load on the shared machine hits all of
 * them alike instead of whichever happened to be measured during it.
 */
async function latencies(endpoint: Endpoint): Promise<{
  samples: Record<Via, number[]>;
  cpuUs: Record<'desktop-proxy' | 'websockify', number>;
}> {
  const vias = ['direct', 'desktop-proxy', 'websockify'] as const;
  const clients = await Promise.all(vias.map((via) => session(endpoint, via)));
  for (const client of clients) for (let i = 0; i < 50; i++) await client.update(0, 0, 1, 1);
  const samples: Record<Via, number[]> = { direct: [], 'desktop-proxy': [], websockify: [] };
  const cpu0 = { ours: cpuTree(endpoint.ours.pid), theirs: cpuTree(endpoint.websockify.pid) };
  for (let i = 0; i < LATENCY_SAMPLES; i++) {
    for (let k = 0; k < vias.length; k++) {
      const j = (i + k) % vias.length;
      const client = clients[j] as RfbBenchClient;
      const t0 = performance.now();
      await client.update(0, 0, 1, 1);
      samples[vias[j] as Via].push((performance.now() - t0) * 1000);
    }
  }
  const cpuUs = {
    'desktop-proxy': ((cpuTree(endpoint.ours.pid) - cpu0.ours) * 1e6) / LATENCY_SAMPLES,
    websockify: ((cpuTree(endpoint.websockify.pid) - cpu0.theirs) * 1e6) / LATENCY_SAMPLES,
  };
  for (const client of clients) client.close();
  for (const via of vias) samples[via].sort((a, b) => a - b);
  return { samples, cpuUs };
}

/** CPU seconds (user + system) used so far by a process and its descendants. */
function cpuTree(pid: number): number {
  let total = 0;
  const visit = (p: number) => {
    try {
      const fields = readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
      total += (Number(fields[11]) + Number(fields[12])) / 100;
      for (const task of readdirSync(`/proc/${p}/task`)) {
        const kids = readFileSync(`/proc/${p}/task/${task}/children`, 'utf8').trim();
        for (const k of kids ? kids.split(/\s+/) : []) visit(Number(k));
      }
    } catch {
      // The process went away while being measured.
    }
  };
  visit(pid);
  return total;
}

/** Proportional set size of a process and its descendants (shares counted once), in kB. */
function pssTree(pid: number): number {
  let total = 0;
  const visit = (p: number) => {
    try {
      const rollup = readFileSync(`/proc/${p}/smaps_rollup`, 'utf8');
      total += Number(/^Pss:\s+(\d+) kB/m.exec(rollup)?.[1] ?? 0);
      for (const task of readdirSync(`/proc/${p}/task`)) {
        const kids = readFileSync(`/proc/${p}/task/${task}/children`, 'utf8').trim();
        for (const k of kids ? kids.split(/\s+/) : []) visit(Number(k));
      }
    } catch {
      // The process went away while being measured.
    }
  };
  visit(pid);
  return total;
}

async function memoryPerConnection(endpoint: Endpoint, via: Exclude<Via, 'direct'>) {
  const pid = via === 'desktop-proxy' ? endpoint.ours.pid : endpoint.websockify.pid;
  await sleep(500);
  const before = pssTree(pid);
  const clients: RfbBenchClient[] = [];
  for (let i = 0; i < SESSIONS; i++) {
    const c = await session(endpoint, via);
    await c.update(0, 0, 64, 64);
    clients.push(c);
  }
  await sleep(1000);
  const after = pssTree(pid);
  for (const c of clients) c.close();
  await sleep(1500);
  return (after - before) / SESSIONS;
}

/** Aggregate MB/s of SESSIONS viewers streaming full-screen updates at once. */
async function concurrent(endpoint: Endpoint, via: Via, seconds: number) {
  const clients = await Promise.all(Array.from({ length: SESSIONS }, () => session(endpoint, via)));
  const t0 = performance.now();
  const perSession = await Promise.all(
    clients.map(async (c) => {
      let updates = 0;
      while (performance.now() - t0 < seconds * 1000) {
        await c.update();
        updates += 1;
      }
      return updates;
    }),
  );
  const elapsed = (performance.now() - t0) / 1000;
  const mb = clients.reduce((sum, c) => sum + c.bytesReceived, 0) / 1e6;
  for (const c of clients) c.close();
  await sleep(1000);
  return { rate: mb / elapsed, minUpdates: Math.min(...perSession), completed: perSession.length };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
};
const pct = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
const f = (n: number, digits = 1) => n.toFixed(digits);

async function main(): Promise<number> {
  const runs = SMOKE ? 1 : option('--runs', 5);
  const seconds = SMOKE ? 0.5 : option('--seconds', 3);
  const dir = await mkdtemp(join(tmpdir(), 'dp-bench-'));
  try {
    const xvnc = await startXvnc(dir);
    const synthSocket = join(dir, 'synthetic.sock');
    const synth = track(
      spawn(process.execPath, [fileURLToPath(import.meta.url), 'synthetic-server', synthSocket], {
        stdio: 'ignore',
      }),
    );
    await waitFor(() => existsSync(synthSocket) || synth.exitCode !== null, 'synthetic server');
    const endpoints: Endpoint[] = [];
    for (const [name, socket, serverPid] of [
      ['synthetic RFB server', synthSocket, synth.pid as number],
      ['TigerVNC Xvnc', xvnc.socket, xvnc.pid],
    ] as const) {
      endpoints.push({
        name,
        socket,
        serverPid,
        ours: await startOurs(socket),
        websockify: await startWebsockify(socket),
      });
    }

    const lines: string[] = [];
    let pass = true;
    const out = (s: string) => {
      lines.push(s);
      console.log(s);
    };
    out(
      `desktop-proxy benchmark: ${WIDTH}x${HEIGHT} 32 bpp Raw, ${runs} runs (medians), ` +
        `${seconds} s per throughput run, ${LATENCY_SAMPLES} round trips per latency run` +
        (SMOKE ? ' (BENCH_SMOKE: a smoke run, not a measurement)' : ''),
    );
    out('');
    out('| server | measure | desktop-proxy (filter on) | websockify 0.10 | ratio | floor |');
    out('|---|---|---|---|---|---|');

    for (const endpoint of endpoints) {
      const tp: Record<Via, number[]> = { direct: [], 'desktop-proxy': [], websockify: [] };
      const cpu: Record<Via, number[]> = { direct: [], 'desktop-proxy': [], websockify: [] };
      const viewerCpu: Record<Via, number[]> = { direct: [], 'desktop-proxy': [], websockify: [] };
      const serverCpu: Record<Via, number[]> = { direct: [], 'desktop-proxy': [], websockify: [] };
      const pipelineCpu: Record<Via, number[]> = {
        direct: [],
        'desktop-proxy': [],
        websockify: [],
      };
      const frameKb: Record<Via, number[]> = { direct: [], 'desktop-proxy': [], websockify: [] };
      for (let r = 0; r < (PARTS.has('throughput') ? runs : 0); r++) {
        // Alternate the order so that drifting background load hits both alike.
        const order =
          r % 2 === 0
            ? (['desktop-proxy', 'websockify', 'direct'] as const)
            : (['websockify', 'desktop-proxy', 'direct'] as const);
        for (const via of order) {
          const m = await throughput(endpoint, via, seconds);
          tp[via].push(m.rate);
          cpu[via].push(m.cpuMsPerMb);
          viewerCpu[via].push(m.viewerMsPerMb);
          serverCpu[via].push(m.serverMsPerMb);
          pipelineCpu[via].push(m.serverMsPerMb + m.cpuMsPerMb + m.viewerMsPerMb);
          frameKb[via].push(m.frameKb);
        }
      }
      if (PARTS.has('throughput')) {
        const ours = median(tp['desktop-proxy']);
        const theirs = median(tp.websockify);
        const ok = ours >= 1.5 * theirs;
        pass &&= ok;
        out(
          `| ${endpoint.name} | throughput, MB/s | ${f(ours)} | ${f(theirs)} | ${f(ours / theirs, 2)}x | >= 1.5x: ${ok ? 'PASS' : 'FAIL'} |`,
        );
        out(
          `| ${endpoint.name} | throughput direct (viewer on the VNC socket, no proxy), MB/s | ${f(median(tp.direct))} | | | |`,
        );
        const cpuOurs = median(cpu['desktop-proxy']);
        const cpuTheirs = median(cpu.websockify);
        out(
          `| ${endpoint.name} | proxy CPU time per MB, ms | ${f(cpuOurs, 2)} | ${f(cpuTheirs, 2)} | ${f(cpuOurs / cpuTheirs, 2)}x | |`,
        );
        out(
          `| ${endpoint.name} | viewer CPU time per MB, ms (direct: ${f(median(viewerCpu.direct), 2)}) | ${f(median(viewerCpu['desktop-proxy']), 2)} | ${f(median(viewerCpu.websockify), 2)} | | |`,
        );
        out(
          `| ${endpoint.name} | VNC server CPU time per MB, ms (direct: ${f(median(serverCpu.direct), 2)}) | ${f(median(serverCpu['desktop-proxy']), 2)} | ${f(median(serverCpu.websockify), 2)} | | |`,
        );
        const pipeOurs = median(pipelineCpu['desktop-proxy']);
        const pipeTheirs = median(pipelineCpu.websockify);
        out(
          `| ${endpoint.name} | server + proxy + viewer CPU time per MB, ms (direct: ${f(median(pipelineCpu.direct), 2)}) | ${f(pipeOurs, 2)} | ${f(pipeTheirs, 2)} | ${f(pipeOurs / pipeTheirs, 2)}x | |`,
        );
        out(
          `| ${endpoint.name} | WebSocket frame size seen by the viewer, kB (mean) | ${f(median(frameKb['desktop-proxy']), 0)} | ${f(median(frameKb.websockify), 0)} | | |`,
        );
      }
      if (!PARTS.has('latency')) continue;

      const lat: Record<Via, { p50: number[]; p99: number[] }> = {
        direct: { p50: [], p99: [] },
        'desktop-proxy': { p50: [], p99: [] },
        websockify: { p50: [], p99: [] },
      };
      const rtCpu: Record<'desktop-proxy' | 'websockify', number[]> = {
        'desktop-proxy': [],
        websockify: [],
      };
      for (let r = 0; r < runs; r++) {
        const { samples, cpuUs } = await latencies(endpoint);
        for (const via of ['direct', 'desktop-proxy', 'websockify'] as const) {
          lat[via].p50.push(pct(samples[via], 50));
          lat[via].p99.push(pct(samples[via], 99));
        }
        rtCpu['desktop-proxy'].push(cpuUs['desktop-proxy']);
        rtCpu.websockify.push(cpuUs.websockify);
      }
      const added = (via: 'desktop-proxy' | 'websockify', p: 'p50' | 'p99') =>
        median(lat[via][p]) - median(lat.direct[p]);
      out(
        `| ${endpoint.name} | round trip direct (no proxy), p50 / p99 µs | ${f(median(lat.direct.p50), 0)} / ${f(median(lat.direct.p99), 0)} | | | |`,
      );
      out(
        `| ${endpoint.name} | added latency p50, µs | ${f(added('desktop-proxy', 'p50'), 0)} | ${f(added('websockify', 'p50'), 0)} | | |`,
      );
      out(
        `| ${endpoint.name} | proxy CPU time per round trip, µs | ${f(median(rtCpu['desktop-proxy']), 0)} | ${f(median(rtCpu.websockify), 0)} | ${f(median(rtCpu['desktop-proxy']) / median(rtCpu.websockify), 2)}x | |`,
      );
      const latOk = added('desktop-proxy', 'p99') <= added('websockify', 'p99');
      pass &&= latOk;
      out(
        `| ${endpoint.name} | added latency p99, µs | ${f(added('desktop-proxy', 'p99'), 0)} | ${f(added('websockify', 'p99'), 0)} | | <= websockify: ${latOk ? 'PASS' : 'FAIL'} |`,
      );
    }

    const xvncEndpoint = endpoints[1] as Endpoint;
    if (PARTS.has('memory')) {
      const memOurs = await memoryPerConnection(xvncEndpoint, 'desktop-proxy');
      const memTheirs = await memoryPerConnection(xvncEndpoint, 'websockify');
      out(
        `| TigerVNC Xvnc | memory per connection (PSS of proxy process tree, ${SESSIONS} sessions), kB | ${f(memOurs, 0)} | ${f(memTheirs, 0)} | ${f(memOurs / memTheirs, 2)}x | |`,
      );
    }

    const synthetic = endpoints[0] as Endpoint;
    const conc: Record<'desktop-proxy' | 'websockify', number[]> = {
      'desktop-proxy': [],
      websockify: [],
    };
    let starved = 0;
    for (let r = 0; r < (PARTS.has('concurrency') ? Math.min(runs, 3) : 0); r++) {
      for (const via of ['desktop-proxy', 'websockify'] as const) {
        const c = await concurrent(synthetic, via, seconds);
        conc[via].push(c.rate);
        if (via === 'desktop-proxy' && (c.minUpdates === 0 || c.completed !== SESSIONS))
          starved += 1;
      }
    }
    if (PARTS.has('concurrency')) {
      out(
        `| synthetic RFB server | ${SESSIONS} concurrent sessions, aggregate MB/s | ${f(median(conc['desktop-proxy']))} | ${f(median(conc.websockify))} | ${f(median(conc['desktop-proxy']) / median(conc.websockify), 2)}x | every session served: ${starved === 0 ? 'PASS' : 'FAIL'} |`,
      );
      pass &&= starved === 0;
    }
    out('');
    out(`overall: ${pass ? 'PASS' : 'FAIL'}${SMOKE ? ' (a smoke run: not a verdict)' : ''}`);
    return pass || SMOKE ? 0 : 1;
  } finally {
    for (const c of children) c.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === 'synthetic-server') {
  await startSyntheticServer(process.argv[3] as string, WIDTH, HEIGHT);
} else {
  process.exitCode = await main();
}
