/**
 * The shell blocks of the guides. A fenced block's info string says how it is tested:
 *   ```sh        executed by demo/test/docs.test.ts, on its own
 *   ```sh demo   executed by demo/test/e2e.test.ts while the demo of the README runs
 *   ```sh site   written for an HPC site (Slurm, Apptainer, TLS, an IdP): executed by
 *                docs.test.ts against local stand-ins where one can run, else listed with why
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from './demo.js';

export type BlockKind = 'standalone' | 'demo' | 'site';

export interface Block {
  file: string;
  line: number;
  kind: BlockKind;
  code: string;
}

/** The documents whose every command is tested: the README and the guides in docs/. */
export function documentedFiles(): string[] {
  const guides = readdirSync(join(REPO, 'docs'))
    .filter((f) => f.endsWith('.md') && !['architecture.md', 'benchmarks.md'].includes(f))
    .map((f) => join('docs', f));
  return ['README.md', ...guides];
}

export function shellBlocks(file: string): Block[] {
  const text = readFileSync(join(REPO, file), 'utf8');
  const lines = text.split('\n');
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(\w*)\s*(.*)$/.exec(lines[i] as string);
    if (!open) continue;
    const [, lang, tag] = open;
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && !/^```\s*$/.test(lines[i] as string); i++) {
      body.push(lines[i] as string);
    }
    if (!['sh', 'bash', 'shell'].includes(lang ?? '')) continue;
    const t = (tag ?? '').trim();
    if (t !== '' && t !== 'demo' && t !== 'site') {
      throw new Error(`${file}:${start + 1}: unknown block tag "${t}" (use none, demo or site)`);
    }
    blocks.push({
      file,
      line: start + 1,
      kind: t === '' ? 'standalone' : (t as BlockKind),
      code: body.join('\n'),
    });
  }
  return blocks;
}

export function allBlocks(): Block[] {
  return documentedFiles().flatMap(shellBlocks);
}

/**
 * A folder of the workspace CLIs, each as `node <its file>`: what `npm ci` links into
 * node_modules/.bin, without depending on the execute bit of files built after it.
 */
function cliFolder(home: string): string {
  const bin = join(home, 'bin');
  mkdirSync(bin);
  const root = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as {
    workspaces: string[];
  };
  for (const w of root.workspaces) {
    const pkg = JSON.parse(readFileSync(join(REPO, w, 'package.json'), 'utf8')) as {
      bin?: Record<string, string>;
    };
    for (const [name, file] of Object.entries(pkg.bin ?? {})) {
      const script = `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(join(REPO, w, file))} "$@"\n`;
      writeFileSync(join(bin, name), script, { mode: 0o755 });
    }
  }
  return bin;
}

/** Runs a block with bash -euo pipefail from the repository root, in a fresh HOME. */
export function runBlock(
  b: Block,
  env: NodeJS.ProcessEnv = {},
  timeoutMs = 180_000,
): { status: number | null; out: string } {
  const home = mkdtempSync(join(tmpdir(), 'tre-doc-home-'));
  try {
    const r = spawnSync('bash', ['-euo', 'pipefail', '-c', b.code], {
      cwd: REPO,
      env: {
        ...process.env,
        HOME: home,
        PATH: `${cliFolder(home)}:${join(REPO, 'node_modules', '.bin')}:${join(REPO, '.venv', 'bin')}:${process.env.PATH ?? ''}`,
        ...env,
      },
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
      timeout: timeoutMs,
    });
    return { status: r.status, out: `${r.stdout}${r.stderr}` };
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
}

/** The design documents: their commands are inline code spans, not shell blocks. */
export const DESIGN_DOCS = ['docs/architecture.md', 'docs/benchmarks.md'];

export interface InlineCommand {
  file: string;
  line: number;
  code: string;
}

/** The names the repository's packages install as commands (their `bin` entries). */
export function treClis(): string[] {
  const root = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as {
    workspaces: string[];
  };
  return root.workspaces.flatMap((w) => {
    const pkg = JSON.parse(readFileSync(join(REPO, w, 'package.json'), 'utf8')) as {
      bin?: Record<string, string>;
    };
    return Object.keys(pkg.bin ?? {});
  });
}

const TOOLS = ['npm', 'npx', 'node', 'openssl', 'gocryptfs', 'websockify', 'hyperfine', 'setpriv'];

/**
 * Inline code spans that are commands: a TRE CLI (alone or with arguments), a script of
 * scripts/, `cd <pkg> && ...`, or one of the tools above with arguments. Bare tool names
 * (`gocryptfs`) are names, not commands.
 */
export function inlineCommands(file: string): InlineCommand[] {
  const clis = new Set(treClis());
  const found: InlineCommand[] = [];
  let fenced = false;
  readFileSync(join(REPO, file), 'utf8')
    .split('\n')
    .forEach((text, i) => {
      if (/^```/.test(text)) fenced = !fenced;
      if (fenced) return;
      for (const m of text.matchAll(/`([^`]+)`/g)) {
        const code = (m[1] as string).trim();
        const first = code.split(/\s+/)[0] as string;
        const isCommand =
          clis.has(first) ||
          /^scripts\/[a-z-]+$/.test(first) ||
          /^cd [\w-]+ && /.test(code) ||
          (TOOLS.includes(first) && /\s/.test(code));
        if (isCommand) found.push({ file, line: i + 1, code });
      }
    });
  return found;
}
