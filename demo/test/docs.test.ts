/**
 * Doc tests: every shell block of the README and the guides runs (or is marked as needing an
 * HPC site, and counted), every relative link and image resolves, and the screenshots the guides
 * show are small enough to keep in the repository.
 */
import { describe, expect, test } from '@jest/globals';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { REPO } from './support/demo.js';
import { allBlocks, documentedFiles, runBlock, type Block } from './support/doc-blocks.js';

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
