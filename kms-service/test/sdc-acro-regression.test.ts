/**
 * The residual-df rule against ACRO's own regression check (`acro.ols`, from the repository's
 * .venv): for fits whose residual degrees of freedom were worked out by hand (observations
 * minus parameters), ACRO reports the same df and the checker, reading a results table with
 * that df, gives the same verdict on both sides of the threshold.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, expect, test } from '@jest/globals';
import { checkFile } from '../src/sdc/check.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const PYTHON = join(ROOT, '.venv', 'bin', 'python');
const SCRIPT = fileURLToPath(new URL('./acro-regression.py', import.meta.url));

const CASES = [
  { name: 'df 9 (12 obs, 3 params)', n: 12, k: 3, df: 9 },
  { name: 'df 10 (13 obs, 3 params)', n: 13, k: 3, df: 10 },
  { name: 'df 2 (6 obs, 4 params)', n: 6, k: 4, df: 2 },
  { name: 'df 95 (100 obs, 5 params)', n: 100, k: 5, df: 95 },
];

let acro: Record<string, { status: string; dof: number }>;

beforeAll(() => {
  acro = JSON.parse(
    execFileSync(PYTHON, [SCRIPT], { input: JSON.stringify(CASES), encoding: 'utf8' }),
  ) as typeof acro;
}, 120_000);

test.each(CASES.map((c) => [c.name, c] as const))('%s: the same verdict as ACRO', (_n, c) => {
  const theirs = acro[c.name]!;
  expect(theirs.dof).toBe(c.df);
  const mine = checkFile('model.csv', `model,n_obs,df_resid\nm,${c.n},${c.df}\n`);
  expect(mine.verdict).toBe(theirs.status);
});

test('the cases reach both verdicts', () => {
  expect(new Set(Object.values(acro).map((a) => a.status))).toEqual(new Set(['pass', 'fail']));
});
