/**
 * Doc tests: every shell block of the README and the guides runs (a `sh site` block against
 * local stand-ins for the site's parts, or it is listed with why not and the guide says so),
 * every relative link and image resolves, and the screenshots the guides show are small enough
 * to keep in the repository. The design documents (architecture.md,
 * benchmarks.md) name their commands inline: each one runs here (a CLI's `--help` with the
 * options the text uses, each bench as shown with BENCH_SMOKE=1, `openssl speed` and
 * `gocryptfs -speed` as shown, websockify and a gocryptfs mount with their placeholders filled)
 * or is listed with where else it runs; a command without a plan fails the test.
 */
import { describe, expect, test } from '@jest/globals';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { request as httpRequest } from 'node:http';
import { get as httpsGet } from 'node:https';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { REPO } from './support/demo.js';
import {
  allBlocks,
  DESIGN_DOCS,
  documentedFiles,
  inlineCommands,
  runBlock,
  treClis,
  type Block,
  type InlineCommand,
} from './support/doc-blocks.js';
import {
  baseHubConfig,
  freePort,
  privateSlurm,
  selfSignedCert,
  startHub,
  tempDir,
  until,
} from './support/site.js';

const blocks = allBlocks();
// The README's two quick-start commands run elsewhere: `run` in e2e.test.ts, `test` in CI.
const isQuickstart = (b: Block) =>
  b.file === 'README.md' && /scripts\/quickstart (run|test)/.test(b.code);
const standalone = blocks.filter((b) => b.kind === 'standalone' && !isQuickstart(b));
const siteBlocks = blocks.filter((b) => b.kind === 'site');

describe('the guides', () => {
  test('there are guides, and they hold commands', () => {
    expect(documentedFiles().length).toBeGreaterThanOrEqual(5);
    expect(standalone.length).toBeGreaterThanOrEqual(3);
    const notRun = siteBlocks.filter((b) => sitePlan(b).kind !== 'run');
    process.stdout.write(
      `doc blocks: ${standalone.length} run here, ${blocks.filter((b) => b.kind === 'demo').length} against the demo (e2e.test.ts), ${siteBlocks.length - notRun.length} site blocks against local stand-ins, ${notRun.length} not run here:\n` +
        notRun
          .map((b) => {
            const p = sitePlan(b);
            return `  ${b.file}:${b.line}: ${p.kind === 'run' ? '' : p.why}`;
          })
          .join('\n') +
        '\n',
    );
  });

  test.each(standalone.map((b) => [`${b.file}:${b.line}`, b] as const))(
    'the block at %s runs',
    (_where, b) => {
      const r = runBlock(b);
      expect({
        where: `${b.file}:${b.line}`,
        status: r.status,
        out: r.status === 0 ? '' : r.out,
      }).toEqual({
        where: `${b.file}:${b.line}`,
        status: 0,
        out: '',
      });
    },
  );

  test('every relative link and image resolves; screenshots are small', () => {
    for (const file of documentedFiles()) {
      const text = readFileSync(join(REPO, file), 'utf8');
      for (const m of text.matchAll(/\]\(([^)\s#]+)(#[^)]*)?\)/g)) {
        const target = m[1] as string;
        if (/^[a-z]+:/.test(target)) continue;
        const path = join(REPO, dirname(file), target);
        expect({ file, target, exists: existsSync(path) }).toEqual({ file, target, exists: true });
        if (target.endsWith('.png')) expect(statSync(path).size).toBeLessThan(250_000);
      }
    }
  });
});

/** How a `sh site` block of the guides is tested: against local stand-ins, or not, and why. */
type SitePlan =
  | { kind: 'run'; run: (b: Block) => Promise<void> }
  | { kind: 'elsewhere'; why: string; check: () => void }
  | { kind: 'cannot'; why: string };

/** Runs a block with bash from the repository root (or `cwd`); it must exit 0. */
function runSiteBlock(b: Block, env: NodeJS.ProcessEnv, cwd?: string): string {
  const r = runBlock({ ...b, code: `${cwd ? `cd ${JSON.stringify(cwd)}\n` : ''}${b.code}` }, env);
  expect({
    where: `${b.file}:${b.line}`,
    status: r.status,
    out: r.status === 0 ? '' : r.out,
  }).toEqual({ where: `${b.file}:${b.line}`, status: 0, out: '' });
  return r.out;
}

/** The partition block on a private Slurm: the partition exists and runs a job. */
async function slurmPartitionRuns(b: Block): Promise<void> {
  const slurm = await privateSlurm();
  try {
    const out = runSiteBlock(b, { SLURM_CONF: slurm.conf, TRE_NODES: slurm.node });
    expect(out).toMatch(/^tre\s+up\s+1-00:00:00\s+1\s/m);
    const dir = tempDir('slurm-job');
    try {
      const id = execFileSync(
        'sbatch',
        ['--parsable', '-p', 'tre', '-o', join(dir, 'out'), '--wrap', 'echo partition tre ran'],
        { env: slurm.env, encoding: 'utf8' },
      ).trim();
      await until(
        `job ${id} in partition tre`,
        () =>
          existsSync(join(dir, 'out')) &&
          readFileSync(join(dir, 'out'), 'utf8').includes('partition tre ran'),
        60_000,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  } finally {
    slurm.stop();
  }
}

/** The TLS block on a hub of its own: HTTPS with the certificate, and no plain HTTP. */
async function hubTlsRuns(b: Block): Promise<void> {
  const etc = tempDir('etc');
  try {
    mkdirSync(join(etc, 'tls'));
    const { cert } = selfSignedCert(join(etc, 'tls'));
    const { port, config } = await baseHubConfig(etc);
    runSiteBlock(b, { TRE_ETC: etc });
    const ca = readFileSync(cert);
    const get = () =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        httpsGet({ host: '127.0.0.1', port, path: '/hub/api', ca }, (res) => {
          let body = '';
          res.on('data', (d: Buffer) => (body += d.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        }).on('error', reject);
      });
    const hub = await startHub(etc, config, async () => (await get()).status === 200);
    try {
      expect(JSON.parse((await get()).body)).toHaveProperty('version');
      const plain = await fetch(`http://127.0.0.1:${port}/hub/api`).then(
        (res) => res.status,
        () => 'refused',
      );
      expect(plain).not.toBe(200);
    } finally {
      await hub.stop();
    }
  } finally {
    rmSync(etc, { recursive: true, force: true });
  }
}

/** The single sign-on block on a hub of its own: the login goes to the identity provider. */
async function hubOauthRuns(b: Block): Promise<void> {
  const etc = tempDir('etc');
  try {
    const { port, config } = await baseHubConfig(etc);
    writeFileSync(join(etc, 'oauth-secret'), `${randomBytes(16).toString('hex')}\n`, {
      mode: 0o600,
    });
    // The venv already holds oauthenticator (requirements-dev.txt): pip must not need the index.
    runSiteBlock(b, {
      TRE_ETC: etc,
      TRE_VENV: join(REPO, '.venv'),
      PIP_NO_INDEX: '1',
      PIP_DISABLE_PIP_VERSION_CHECK: '1',
    });
    const login = () => fetch(`http://127.0.0.1:${port}/hub/oauth_login`, { redirect: 'manual' });
    const hub = await startHub(etc, config, async () => (await login()).status === 302);
    try {
      const to = new URL((await login()).headers.get('location') ?? '');
      expect(`${to.origin}${to.pathname}`).toBe('https://sso.example.org/authorize');
      expect(to.searchParams.get('client_id')).toBe('tre');
      expect(to.searchParams.get('redirect_uri')).toBe(
        'https://tre.example.org/hub/oauth_callback',
      );
      // A misspelt setting is only a warning in the hub's log.
      expect(hub.log()).not.toMatch(/not recognized|Config option .* not/);
    } finally {
      await hub.stop();
    }
  } finally {
    rmSync(etc, { recursive: true, force: true });
  }
}

/** `rm -rf .tre-demo` in a folder holding a state folder of its own. */
async function removeStateRuns(b: Block): Promise<void> {
  const dir = tempDir('rm');
  try {
    mkdirSync(join(dir, '.tre-demo', 'secrets'), { recursive: true });
    writeFileSync(join(dir, '.tre-demo', 'secrets', 'x'), 'x');
    runSiteBlock(b, {}, dir);
    expect(existsSync(join(dir, '.tre-demo'))).toBe(false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function sitePlan(b: Block): SitePlan {
  const code = b.code;
  if (/^conf=\$\{SLURM_CONF:-\/etc\/slurm\/slurm\.conf\}$/m.test(code))
    return { kind: 'run', run: slurmPartitionRuns };
  if (/^apptainer build /m.test(code))
    return {
      kind: 'cannot',
      why: 'apptainer build: no Apptainer package for Debian 12 here (the bubblewrap runtime applies the same policy: container/test/bwrap-runtime.test.ts)',
    };
  if (/c\.JupyterHub\.ssl_cert = /.test(code)) return { kind: 'run', run: hubTlsRuns };
  if (/authenticator_class = 'generic-oauth'/.test(code)) return { kind: 'run', run: hubOauthRuns };
  if (/checkout v\d/.test(code) && /systemctl restart/.test(code))
    return {
      kind: 'cannot',
      why: 'an upgrade: no release tag yet, a full npm ci (minutes of downloads and native builds), systemctl (no systemd here; the TRE ships no units)',
    };
  if (/^scripts\/quickstart run\s/m.test(code))
    return {
      kind: 'elsewhere',
      why: "foreground until Ctrl-C: e2e.test.ts runs the first, slurm.test.ts the second; the third's options are checked in tre-demo --help",
      check: () => {
        const help = runBlock({ ...b, code: 'tre-demo --help' }).out;
        const lines = code.split('\n').filter((l) => l.startsWith('scripts/quickstart run'));
        expect(lines.length).toBe(3);
        const flags = lines.flatMap((l) => flagsOf(l.replace(/\s+#.*$/, '')));
        expect(flags.filter((f) => !help.includes(`  ${f} `))).toEqual([]);
        expect(readFileSync(join(REPO, 'demo', 'test', 'slurm.test.ts'), 'utf8')).toContain(
          "args: ['--slurm']",
        );
      },
    };
  if (code.trim() === 'rm -rf .tre-demo') return { kind: 'run', run: removeStateRuns };
  throw new Error(
    `${b.file}:${b.line}: no test plan for this site block (add one to docs.test.ts)`,
  );
}

describe('the site blocks of the guides', () => {
  test.each(siteBlocks.map((b) => [`${b.file}:${b.line}`, b] as const))(
    'the site block at %s runs against local stand-ins, or says why not',
    async (_where, b) => {
      const p = sitePlan(b);
      if (p.kind === 'run') return p.run(b);
      if (p.kind === 'elsewhere') return p.check();
      // The guide itself must say, near the block, that no test runs it.
      const end = b.line + b.code.split('\n').length + 1;
      const after = readFileSync(join(REPO, b.file), 'utf8')
        .split('\n')
        .slice(end, end + 12);
      expect({
        where: `${b.file}:${b.line}`,
        saysSo: /not (been built or )?run/.test(after.join(' ')),
      }).toEqual({
        where: `${b.file}:${b.line}`,
        saysSo: true,
      });
    },
    240_000,
  );
});

/**
 * How a command of the design documents is tested: `run` executes it (or, for a CLI, its
 * `--help` with the options the text uses) and checks what it must print; `live` starts what
 * the command needs (a VNC server, a cipher directory) and runs it with its placeholders filled.
 */
type Plan =
  | {
      kind: 'run';
      code: string;
      mustPrint: Array<string | RegExp>;
      env?: NodeJS.ProcessEnv;
      inTemp?: boolean;
      timeoutMs?: number;
      problems?: () => string[];
    }
  | { kind: 'live'; run: () => Promise<void> }
  | { kind: 'elsewhere'; why: string };

const flagsOf = (code: string) =>
  [...code.matchAll(/(?<![\w-])(--?[a-z][a-z0-9-]*)/g)].map((m) => m[1] as string);

/** A benchmark's options, as its source in src/bench/ reads them. */
function benchProblems(pkg: string, flags: string[]): string[] {
  const manifest = JSON.parse(readFileSync(join(REPO, pkg, 'package.json'), 'utf8')) as {
    scripts?: Record<string, string>;
  };
  if (!manifest.scripts?.bench) return [`${pkg} has no bench script`];
  const dir = join(REPO, pkg, 'src', 'bench');
  const source = readdirSync(dir)
    .filter((f) => f.endsWith('.ts'))
    .map((f) => readFileSync(join(dir, f), 'utf8'))
    .join('\n');
  return flags
    .filter((f) => f.startsWith('--') && f !== '--')
    .map((f) => f.slice(2))
    .filter((f) => !source.includes(`'${f}'`) && !new RegExp(`\\b${f}: \\{`).test(source))
    .map((f) => `${pkg}'s bench has no --${f}`);
}

/**
 * What each package's bench prints when it worked: its table of results beside the anchor and
 * the ratios (kms-service has no anchor to divide by: its floors are absolute).
 */
const BENCH_RESULTS: Record<string, RegExp[]> = {
  'hub-spawner-bridge': [
    /^\| TRE \(TreSpawner.* \| [\d.]+ \|/m,
    /^ratio TRE \/ batchspawner: [\d.]+ /m,
  ],
  'desktop-proxy': [
    /^\| TigerVNC Xvnc \| throughput, MB\/s \| [\d.]+ \| [\d.]+ \| [\d.]+x \|/m,
    /^\| synthetic RFB server \| added latency p99, µs \| -?\d+ \| -?\d+ \|/m,
    /^overall: (PASS|FAIL)/m,
  ],
  'kms-service': [
    /^1\. \d+ wrapped DEKs streamed: median [\d.]+ s/m,
    /^2\. key release \(2 workers\): median \d+ req\/s, p50 [\d.]+ ms, p99 [\d.]+ ms/m,
    /^3\. audit append: median \d+ entries\/s/m,
    /^4\. tre-kms audit verify, \d+ entries: median [\d.]+ s/m,
  ],
  crypto: [
    /^\| gocryptfs mount on tmpfs: write \| \d+ \|/m,
    /^ratio ours single-thread encrypt \(stream from memory\) \/ openssl 4 KiB: [\d.]+ per CPU second/m,
    /^ratio ours all-core file encrypt \/ gocryptfs tmpfs write: [\d.]+ /m,
  ],
  uploader: [/^\| 1 file of \d+ MiB \| \d+ \| \d+ \| \d+ \| [\d.]+x \| \d+% \|$/m],
  trefs: [
    /^\| trefs \| \d+ \| \d+ \| [\d.]+ \| \d+ \|$/m,
    /^ratios trefs\/gocryptfs: write [\d.]+ /m,
  ],
};

/**
 * A bench command runs as shown with BENCH_SMOKE=1, which each bench honours with one tiny run
 * (its options still parsed), so the very command prints its table while the full run stays
 * what benchmarks.md records. None is quick as it stands: crypto's "quick run" of 64 MiB takes
 * 50 s on the shared 2 cores.
 */
function benchPlan(code: string, pkg: string, options: string): Plan {
  const results = BENCH_RESULTS[pkg];
  if (!results) throw new Error(`no expected output for ${pkg}'s bench (add it to BENCH_RESULTS)`);
  return {
    kind: 'run',
    code,
    mustPrint: results,
    env: { BENCH_SMOKE: '1' },
    // The sessions bench makes batchspawner's venv on its first run (pip, from PyPI).
    timeoutMs: 600_000,
    problems: () => benchProblems(pkg, flagsOf(options)),
  };
}

const fill = (code: string, values: Record<string, string>) =>
  Object.entries(values).reduce((c, [k, v]) => c.split(k).join(v), code);

/**
 * websockify as the desktop-proxy bench starts it, in front of a unix socket that greets like a
 * VNC server: a WebSocket client must get the greeting through it.
 */
async function websockifyRuns(code: string): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'tre-doc-wsfy-'));
  const sock = join(dir, 'vnc.sock');
  const vnc = createNetServer((c) => c.end('RFB 003.008\n')).listen(sock);
  await once(vnc, 'listening');
  const port = await freePort();
  const argv = fill(code, { PORT: String(port), '<sock>': sock }).split(' ');
  const child = spawn(argv[0] as string, argv.slice(1), { stdio: 'ignore' });
  try {
    await until('websockify to pass the VNC greeting on', async () => {
      return await new Promise<boolean>((resolve) => {
        const req = httpRequest({
          host: '127.0.0.1',
          port,
          path: '/websockify',
          headers: {
            Connection: 'Upgrade',
            Upgrade: 'websocket',
            'Sec-WebSocket-Version': '13',
            'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
            'Sec-WebSocket-Protocol': 'binary',
          },
        });
        req.on('error', () => resolve(false));
        req.on('upgrade', (_res, socket) => {
          let got = Buffer.alloc(0);
          socket.on('data', (d: Buffer) => {
            got = Buffer.concat([got, d]);
            // One unmasked binary frame: 0x82, the length, the payload.
            if (got.length >= 2 && got.length >= 2 + (got[1] as number)) {
              socket.destroy();
              resolve(got.subarray(2, 2 + (got[1] as number)).toString() === 'RFB 003.008\n');
            }
          });
          socket.on('close', () => resolve(false));
        });
        req.end();
      });
    });
  } finally {
    child.kill('SIGTERM');
    vnc.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The gocryptfs mount the crypto bench writes through: a file written into the mount lands in
 * the cipher directory under its own name (plaintextnames) as ciphertext, and reads back.
 */
async function gocryptfsMountRuns(code: string): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'tre-doc-gcfs-'));
  const cipher = join(dir, 'cipher');
  const mnt = join(dir, 'mnt');
  mkdirSync(cipher);
  mkdirSync(mnt);
  const argv = fill(code, { '<cipherdir>': cipher, '<mountpoint>': mnt }).split(' ');
  const child = spawn(argv[0] as string, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  child.stdin.end(`${randomBytes(32).toString('hex')}\n`);
  try {
    await until(`gocryptfs to mount (${out})`, () => out.includes('Filesystem mounted and ready'));
    const text = `doc test ${randomBytes(8).toString('hex')}\n`.repeat(100);
    writeFileSync(join(mnt, 'f.txt'), text);
    expect(readFileSync(join(mnt, 'f.txt'), 'utf8')).toBe(text);
    const stored = readFileSync(join(cipher, 'f.txt'));
    expect(stored.length).toBeGreaterThan(text.length);
    expect(stored.includes(Buffer.from('doc test'))).toBe(false);
  } finally {
    spawnSync('fusermount3', ['-u', mnt]);
    if (child.exitCode === null) await once(child, 'exit');
    rmSync(dir, { recursive: true, force: true });
  }
}

function plan(c: InlineCommand, lastPkg: string | undefined): Plan {
  const words = c.code.split(/\s+/);
  const first = words[0] as string;
  if (treClis().includes(first)) {
    const sub = words
      .slice(1)
      .filter((w, i, all) => all.slice(0, i + 1).every((x) => /^[a-z][a-z-]*$/.test(x)));
    return {
      kind: 'run',
      code: [first, ...sub, '--help'].join(' '),
      mustPrint: flagsOf(c.code).filter((f) => f.startsWith('--')),
    };
  }
  if (c.code === 'scripts/quickstart run') {
    return { kind: 'elsewhere', why: "the README's run command: demo/test/e2e.test.ts runs it" };
  }
  if (/^scripts\/[a-z-]+$/.test(c.code))
    return { kind: 'run', code: `${c.code} --help`, mustPrint: [] };
  const bench = /^(?:cd ([\w-]+) && )?npm run bench(?: -w ([\w-]+))?(?: -- (.*))?$/.exec(c.code);
  if (bench) {
    const pkg = bench[1] ?? bench[2] ?? lastPkg;
    if (!pkg) throw new Error(`${c.file}:${c.line}: which package's bench is \`${c.code}\`?`);
    const code = bench[1] || bench[2] ? c.code : `cd ${pkg} && ${c.code}`;
    return benchPlan(code, pkg, bench[3] ?? '');
  }
  // What `npm run bench` runs after building: the same run as the package's bench command.
  if (/^node dist\/bench\/[\w-]+\.js$/.test(c.code) && lastPkg) {
    return benchPlan(`cd ${lastPkg} && npm run bench`, lastPkg, '');
  }
  if (c.code === 'npm run build') {
    return { kind: 'elsewhere', why: 'every CI run builds first (scripts/quickstart test)' };
  }
  // One algorithm at one block size (or for a second per size): a few seconds.
  if (
    first === 'openssl' &&
    words[1] === 'speed' &&
    words.includes('-evp') &&
    (words.includes('-bytes') || words.join(' ').includes('-seconds 1'))
  ) {
    return { kind: 'run', code: c.code, mustPrint: [/^AES-256-GCM\s+[\d.]+k/m] };
  }
  if (c.code === 'gocryptfs -speed') {
    return { kind: 'run', code: c.code, mustPrint: [/^AES-GCM-256-Go\s+[\d.]+ MB\/s/m] };
  }
  if (/^gocryptfs -fg -masterkey=stdin -plaintextnames <cipherdir> <mountpoint>$/.test(c.code)) {
    return { kind: 'live', run: () => gocryptfsMountRuns(c.code) };
  }
  if (/^websockify 127\.0\.0\.1:PORT --unix-target=<sock>$/.test(c.code)) {
    return { kind: 'live', run: () => websockifyRuns(c.code) };
  }
  if (first === 'setpriv') {
    return { kind: 'run', code: 'setpriv --help', mustPrint: flagsOf(c.code) };
  }
  if (c.code === 'node --cpu-prof') {
    // It writes a profile into the working folder: a temporary one.
    return { kind: 'run', code: 'node --cpu-prof -e 0', mustPrint: [], inTemp: true };
  }
  throw new Error(`${c.file}:${c.line}: no test plan for \`${c.code}\` (add one to docs.test.ts)`);
}

function designCommands(): Array<{ c: InlineCommand; p: Plan }> {
  return DESIGN_DOCS.flatMap((file) => {
    let lastPkg: string | undefined;
    return inlineCommands(file).map((c) => {
      const p = plan(c, lastPkg);
      lastPkg = /^cd ([\w-]+) && /.exec(c.code)?.[1] ?? lastPkg;
      return { c, p };
    });
  });
}

describe('the commands of architecture.md and benchmarks.md', () => {
  const all = designCommands();

  test('each one has a test plan; the ones not run here are listed with why', () => {
    expect(all.length).toBeGreaterThanOrEqual(15);
    const notRun = all.filter((x) => x.p.kind === 'elsewhere');
    process.stdout.write(
      `design-doc commands: ${all.length - notRun.length} run here, ${notRun.length} run elsewhere:\n` +
        notRun
          .map(
            ({ c, p }) =>
              `  ${c.file}:${c.line} \`${c.code}\`: ${p.kind === 'elsewhere' ? p.why : ''}`,
          )
          .join('\n') +
        '\n',
    );
  });

  // The same call named in several places runs once.
  const runs = new Map<string, { c: InlineCommand; p: Plan; where: string[] }>();
  for (const x of all) {
    if (x.p.kind === 'elsewhere') continue;
    const key = x.p.kind === 'run' ? JSON.stringify([x.p.code, x.p.env]) : x.c.code;
    const seen = runs.get(key) ?? { ...x, where: [] };
    seen.where.push(`${x.c.file}:${x.c.line}`);
    runs.set(key, seen);
  }

  test.each([...runs.values()].map((x) => [`${x.c.code} (${x.where.join(', ')})`, x] as const))(
    '%s runs',
    async (_name, { c, p }) => {
      if (p.kind === 'live') return p.run();
      if (p.kind !== 'run') return;
      expect(p.problems?.() ?? []).toEqual([]);
      const home = mkdtempSync(join(tmpdir(), 'tre-doc-cmd-'));
      try {
        const t0 = Date.now();
        const r = runBlock(
          {
            file: c.file,
            line: c.line,
            kind: 'standalone',
            code: `${p.inTemp ? `cd ${JSON.stringify(home)} && ` : ''}${p.code}`,
          },
          p.env,
          p.timeoutMs,
        );
        if (p.code.includes('npm run bench'))
          process.stdout.write(
            `${p.code}${p.env?.BENCH_SMOKE ? ' (BENCH_SMOKE=1)' : ''}: ${(Date.now() - t0) / 1000} s\n`,
          );
        const missing = p.mustPrint
          .filter((m) => (typeof m === 'string' ? !r.out.includes(m) : !m.test(r.out)))
          .map(String);
        expect({
          where: `${c.file}:${c.line}`,
          status: r.status,
          missing,
          out: r.status === 0 && missing.length === 0 ? '' : r.out.slice(-4000),
        }).toEqual({ where: `${c.file}:${c.line}`, status: 0, missing: [], out: '' });
      } finally {
        rmSync(home, { recursive: true, force: true });
      }
    },
    600_000,
  );
});
