/**
 * Doc tests: every shell block of the README and the guides runs (or is marked as needing an
 * HPC site, and counted), every relative link and image resolves, and the screenshots the guides
 * show are small enough to keep in the repository. The design documents (architecture.md,
 * benchmarks.md) name their commands inline: each one is run here when that is quick (a CLI's
 * `--help` with the options the text uses, a one-second `openssl speed`), checked without
 * running when it is a benchmark or needs a running service, and listed with the reason.
 */
import { describe, expect, test } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
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

const blocks = allBlocks();
// The README's two quick-start commands run elsewhere: `run` in e2e.test.ts, `test` in CI.
const isQuickstart = (b: Block) =>
  b.file === 'README.md' && /scripts\/quickstart (run|test)/.test(b.code);
const standalone = blocks.filter((b) => b.kind === 'standalone' && !isQuickstart(b));

describe('the guides', () => {
  test('there are guides, and they hold commands', () => {
    expect(documentedFiles().length).toBeGreaterThanOrEqual(5);
    expect(standalone.length).toBeGreaterThanOrEqual(3);
    const site = blocks.filter((b) => b.kind === 'site');
    process.stdout.write(
      `doc blocks: ${standalone.length} run here, ${blocks.filter((b) => b.kind === 'demo').length} against the demo (e2e.test.ts), ${site.length} need an HPC site (not executed): ${site.map((b) => `${b.file}:${b.line}`).join(', ')}\n`,
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

/** How a command of the design documents is tested. */
type Plan =
  | { kind: 'run'; argv: string[]; flags: string[]; inTemp?: boolean }
  | { kind: 'checked'; problems: () => string[]; why: string }
  | { kind: 'elsewhere'; why: string };

const flagsOf = (code: string) =>
  [...code.matchAll(/(?<![\w-])(--?[a-z][a-z0-9-]*)/g)].map((m) => m[1] as string);

function helpOf(argv: string[]): string {
  const r = spawnSync(argv[0] as string, argv.slice(1), { encoding: 'utf8', timeout: 30_000 });
  return `${r.stdout}${r.stderr}`;
}

/** A benchmark's options, as its parseArgs declares them in src/bench/. */
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

const BENCH_WHY = 'a benchmark: minutes of CPU on every core, run by hand for benchmarks.md';

function plan(c: InlineCommand, lastPkg: string | undefined): Plan {
  const words = c.code.split(/\s+/);
  const first = words[0] as string;
  if (treClis().includes(first)) {
    const sub = words
      .slice(1)
      .filter((w, i, all) => all.slice(0, i + 1).every((x) => /^[a-z][a-z-]*$/.test(x)));
    return {
      kind: 'run',
      argv: [first, ...sub, '--help'],
      flags: flagsOf(c.code).filter((f) => f.startsWith('--')),
    };
  }
  if (c.code === 'scripts/quickstart run') {
    return { kind: 'elsewhere', why: "the README's run command: demo/test/e2e.test.ts runs it" };
  }
  if (/^scripts\/[a-z-]+$/.test(c.code))
    return { kind: 'run', argv: [c.code, '--help'], flags: [] };
  const bench = /^(?:cd ([\w-]+) && )?npm run bench(?: -w ([\w-]+))?(?: -- (.*))?$/.exec(c.code);
  if (bench) {
    const pkg = bench[1] ?? bench[2] ?? lastPkg;
    if (!pkg) throw new Error(`${c.file}:${c.line}: which package's bench is \`${c.code}\`?`);
    return {
      kind: 'checked',
      problems: () => benchProblems(pkg, flagsOf(bench[3] ?? '')),
      why: BENCH_WHY,
    };
  }
  if (c.code === 'npm run build') {
    return { kind: 'elsewhere', why: 'every CI run builds first (scripts/quickstart test)' };
  }
  if (first === 'openssl' && words[1] === 'speed') {
    if (!words.includes('-evp'))
      return { kind: 'elsewhere', why: 'every algorithm: minutes of CPU' };
    return {
      kind: 'run',
      argv: ['openssl', 'speed', '-seconds', '1', ...words.slice(2)],
      flags: [],
    };
  }
  if (first === 'gocryptfs') {
    const flags = flagsOf(c.code);
    return {
      kind: 'checked',
      problems: () => {
        const help = helpOf(['gocryptfs', '-help']);
        return flags.filter((f) => !help.includes(`${f} `)).map((f) => `gocryptfs has no ${f}`);
      },
      why: '-speed takes ~15 s of wall time; a mount needs a master key on stdin',
    };
  }
  if (first === 'websockify') {
    const flags = flagsOf(c.code).filter((f) => f.startsWith('--'));
    return {
      kind: 'checked',
      problems: () => {
        const help = helpOf(['websockify', '--help']);
        return flags.filter((f) => !help.includes(f)).map((f) => `websockify has no ${f}`);
      },
      why: "needs a VNC server on the unix socket (desktop-proxy's bench starts Xvnc)",
    };
  }
  if (first === 'setpriv') {
    return { kind: 'run', argv: ['setpriv', '--help'], flags: flagsOf(c.code) };
  }
  if (c.code === 'node --cpu-prof') {
    // It writes a profile into the working folder: a temporary one.
    return { kind: 'run', argv: ['node', '--cpu-prof', '-e', '0'], flags: [], inTemp: true };
  }
  if (/^node dist\/bench\/[\w-]+\.js$/.test(c.code) && lastPkg) {
    return {
      kind: 'checked',
      problems: () =>
        existsSync(join(REPO, lastPkg, words[1] as string))
          ? []
          : [`${lastPkg}/${words[1]} is missing`],
      why: BENCH_WHY,
    };
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
    const notRun = all.filter((x) => x.p.kind !== 'run');
    process.stdout.write(
      `design-doc commands: ${all.length - notRun.length} run here, ${notRun.length} not executed:\n` +
        notRun
          .map(
            ({ c, p }) =>
              `  ${c.file}:${c.line} \`${c.code}\`: ${p.kind === 'checked' ? `checked without running (${p.why})` : p.kind === 'elsewhere' ? p.why : ''}`,
          )
          .join('\n') +
        '\n',
    );
  });

  // The same call named in several places runs once.
  const runs = new Map<string, { c: InlineCommand; p: Plan; where: string[] }>();
  for (const x of all) {
    if (x.p.kind !== 'run') continue;
    const key = JSON.stringify([x.p.argv, x.p.flags]);
    const seen = runs.get(key) ?? { ...x, where: [] };
    seen.where.push(`${x.c.file}:${x.c.line}`);
    runs.set(key, seen);
  }

  test.each([...runs.values()].map((x) => [`${x.c.code} (${x.where.join(', ')})`, x] as const))(
    '%s runs',
    (_name, { c, p }) => {
      if (p.kind !== 'run') return;
      const home = mkdtempSync(join(tmpdir(), 'tre-doc-cmd-'));
      try {
        const r = runBlock({
          file: c.file,
          line: c.line,
          kind: 'standalone',
          code: `${p.inTemp ? `cd ${JSON.stringify(home)} && ` : ''}${p.argv.map((a) => JSON.stringify(a)).join(' ')}`,
        });
        const missing = p.flags.filter((f) => !r.out.includes(f));
        expect({ where: `${c.file}:${c.line}`, status: r.status, missing }).toEqual({
          where: `${c.file}:${c.line}`,
          status: 0,
          missing: [],
        });
      } finally {
        rmSync(home, { recursive: true, force: true });
      }
    },
  );

  test.each(
    all
      .filter((x) => x.p.kind === 'checked')
      .map((x) => [`${x.c.file}:${x.c.line} ${x.c.code}`, x] as const),
  )('%s: the script and the options it uses exist', (_name, { p }) => {
    if (p.kind === 'checked') expect(p.problems()).toEqual([]);
  });
});
