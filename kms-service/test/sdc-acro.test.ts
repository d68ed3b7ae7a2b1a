/**
 * The disclosure checker and ACRO (pip `acro`, from the repository's .venv) on the same tables:
 * the same verdict per file and the same failing rules per cell. ACRO works on microdata, so each
 * case is microdata `row, col, value`: ACRO cross-tabulates it; the checker reads the long form
 * directly (magnitude) or the frequency table a researcher would export from it (counts).
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, expect, test } from '@jest/globals';
import { checkFile, type FileCheck } from '../src/sdc/check.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const PYTHON = join(ROOT, '.venv', 'bin', 'python');
const SCRIPT = fileURLToPath(new URL('./acro-verdicts.py', import.meta.url));

type Row = [string, string, number];
interface Case {
  name: string;
  kind: 'frequency' | 'magnitude';
  rows: Row[];
}

const cell = (r: string, c: string, values: number[]): Row[] => values.map((v) => [r, c, v]);
const repeat = (n: number, v: number): number[] => Array.from({ length: n }, () => v);

const CASES: Case[] = [
  {
    name: 'magnitude, every rule',
    kind: 'magnitude',
    rows: [
      ...cell('a', 'x', repeat(10, 10)),
      ...cell('a', 'y', repeat(9, 100)),
      ...cell('b', 'x', [1000, 10, ...repeat(8, 1)]),
      ...cell('b', 'y', [50, 50, ...repeat(10, 1)]),
    ],
  },
  {
    name: 'magnitude, boundaries',
    kind: 'magnitude',
    rows: [
      ...cell('a', 'x', [45, 45, ...repeat(8, 1.25)]),
      ...cell('a', 'y', [100, 1, ...repeat(10, 1)]),
      ...cell('b', 'x', repeat(10, 0)),
      ...cell('b', 'y', [30, 30, ...repeat(12, 5)]),
    ],
  },
  {
    name: 'magnitude, passing',
    kind: 'magnitude',
    rows: [
      ...cell('a', 'x', repeat(12, 7)),
      ...cell('a', 'y', [20, 18, ...repeat(10, 9)]),
      ...cell('b', 'x', repeat(30, 1)),
      ...cell('b', 'y', repeat(10, 3.5)),
    ],
  },
  {
    name: 'magnitude, a negative contribution',
    kind: 'magnitude',
    rows: [
      ...cell('a', 'x', repeat(12, 7)),
      ...cell('a', 'y', [...repeat(11, 9), -4]),
      ...cell('b', 'x', repeat(30, 1)),
      ...cell('b', 'y', repeat(10, 3)),
    ],
  },
  {
    name: 'frequency, small and empty cells',
    kind: 'frequency',
    rows: [
      ...cell('a', 'x', repeat(12, 1)),
      ...cell('a', 'y', repeat(3, 1)),
      ...cell('b', 'y', repeat(10, 1)),
      ...cell('b', 'z', repeat(9, 1)),
      ...cell('a', 'z', repeat(40, 1)),
    ],
  },
  {
    name: 'frequency, passing',
    kind: 'frequency',
    rows: [
      ...cell('a', 'x', repeat(10, 1)),
      ...cell('a', 'y', repeat(11, 1)),
      ...cell('b', 'x', repeat(25, 1)),
      ...cell('b', 'y', repeat(10, 1)),
    ],
  },
];

/** What the researcher would export: the long form, or the cross-tabulated counts. */
function exported(c: Case): string {
  if (c.kind === 'magnitude') {
    return ['row,col,value', ...c.rows.map((r) => r.join(','))].join('\n');
  }
  const rows = [...new Set(c.rows.map((r) => r[0]))].sort();
  const cols = [...new Set(c.rows.map((r) => r[1]))].sort();
  const count = (r: string, k: string): number =>
    c.rows.filter((x) => x[0] === r && x[1] === k).length;
  return [
    ['row', ...cols].join(','),
    ...rows.map((r) => [r, ...cols.map((k) => count(r, k))].join(',')),
  ].join('\n');
}

const ours = (r: FileCheck): Record<string, string[]> =>
  Object.fromEntries(
    r.cells.map((c) => [
      c.labels.slice(0, 2).join('/'),
      c.hits
        .filter((h) => h.verdict === 'fail')
        .map((h) => h.rule)
        .sort(),
    ]),
  );

let acro: Record<string, { status: string; cells: Record<string, string[]> }>;

beforeAll(() => {
  acro = JSON.parse(
    execFileSync(PYTHON, [SCRIPT], { input: JSON.stringify(CASES), encoding: 'utf8' }),
  ) as typeof acro;
}, 120_000);

test.each(CASES.map((c) => [c.name, c] as const))('%s: the same verdicts as ACRO', (_n, c) => {
  const mine = checkFile('t.csv', exported(c));
  const theirs = acro[c.name]!;
  expect(mine.verdict).toBe(theirs.status);
  if (theirs.status === 'review') {
    // ACRO marks a table with negatives as a whole for review; the checker marks the cell.
    expect(mine.cells.filter((x) => x.verdict === 'review').map((x) => x.ref)).toEqual(['a/y']);
    return;
  }
  expect(ours(mine)).toEqual(theirs.cells);
});

test('the cases exercise every rule on both sides', () => {
  const rules = new Set(Object.values(acro).flatMap((a) => Object.values(a.cells).flat()));
  expect([...rules].sort()).toEqual(['nk-rule', 'p-ratio', 'threshold', 'zero']);
  expect(new Set(Object.values(acro).map((a) => a.status))).toEqual(
    new Set(['pass', 'fail', 'review']),
  );
});
