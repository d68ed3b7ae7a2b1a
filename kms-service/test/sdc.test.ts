/**
 * The disclosure checker against tables whose verdicts were worked out by hand, one rule at a
 * time and at each rule's boundary; and the CSV reader under fast-check: it never throws anything
 * but its own typed error, and reads back exactly what an RFC 4180 writer wrote.
 */
import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { checkFile, magnitudeHits, ACRO_DEFAULTS, type FileCheck } from '../src/sdc/check.js';
import { parseDelimited, TableParseError } from '../src/sdc/csv.js';

const cellsOf = (r: FileCheck): Record<string, string> =>
  Object.fromEntries(
    r.cells.map((c) => [c.ref, [c.verdict, ...c.hits.map((h) => h.rule)].join(' ')]),
  );

/** Long-form rows `group,value` from a map of group -> contributions. */
function longCsv(groups: Record<string, number[]>): string {
  let out = 'group,value\n';
  for (const [g, vs] of Object.entries(groups)) for (const v of vs) out += `${g},${v}\n`;
  return out;
}
const repeat = (n: number, v: number): number[] => Array.from({ length: n }, () => v);

describe('frequency tables', () => {
  test('each count against the threshold of 10, zeros and negatives', () => {
    const r = checkFile('f.csv', 'sex,smoker,non-smoker,unknown\nF,10,250,\nM,9,0,-1\n');
    expect(r.shape).toBe('frequency');
    expect(cellsOf(r)).toEqual({
      'F/smoker': 'pass',
      'F/non-smoker': 'pass',
      'F/unknown': 'review missing',
      'M/smoker': 'fail threshold',
      'M/non-smoker': 'fail zero threshold',
      'M/unknown': 'review negative',
    });
    expect(r.verdict).toBe('fail');
    expect(r.summary).toEqual({ pass: 2, review: 2, fail: 2 });
  });

  test('all counts at or above 10 pass; TSV and quoted labels are read', () => {
    const r = checkFile(
      't.tsv',
      'region\tcases\n"North, upper"\t10\n"say ""hi"""\t11\r\n"two\nlines"\t12',
    );
    expect(r.verdict).toBe('pass');
    expect(r.cells.map((c) => c.labels[0])).toEqual(['North, upper', 'say "hi"', 'two\nlines']);
  });

  test('zeros may be declared non-disclosive, as ACRO allows', () => {
    const r = checkFile('z.csv', 'a,b\nx,0\n', { parameters: { zerosAreDisclosive: false } });
    expect(cellsOf(r)).toEqual({ 'x/b': 'pass' });
  });

  test('fractional counts are refused with a pointer to the long form', () => {
    const r = checkFile('m.csv', 'a,mean\nx,12.5\n');
    expect(r.verdict).toBe('fail');
    expect(r.hits[0]!.rule).toBe('parse');
    expect(r.hits[0]!.detail).toMatch(/line 2, field 2: .*long form/);
  });
});

describe('magnitude tables in long form', () => {
  test('threshold, p-ratio, nk-dominance and negatives, worked by hand', () => {
    const r = checkFile(
      'income.csv',
      longCsv({
        // 10 x 10: p = (100-20)/10 = 8, nk = 20% -> pass
        even: repeat(10, 10),
        // 9 contributions -> threshold
        nine: repeat(9, 100),
        // 50, 50, ten 1s: nk = 100/110 = 90.9% fails; p = 10/50 = 0.2 passes
        pair: [50, 50, ...repeat(10, 1)],
        // 1000, 10, eight 1s: p = 8/1000 = 0.008 fails; nk = 1010/1018 fails
        giant: [1000, 10, ...repeat(8, 1)],
        // exactly 90%: 45 + 45 of 100 fails nk (>=); p = 10/45 passes
        edge: [45, 45, ...repeat(8, 1.25)],
        // p exactly 0.1: 100, 1, then 10 of 1 -> (111-100-1)/100 = 0.1 passes p; nk 101/111 fails
        pedge: [100, 1, ...repeat(10, 1)],
        // a negative contribution: dominance is undefined -> review
        neg: [...repeat(11, 5), -3],
        // all zero: the largest contribution is 0 -> p-ratio fails (as ACRO)
        zeros: repeat(10, 0),
      }),
    );
    expect(r.shape).toBe('long');
    expect(cellsOf(r)).toEqual({
      even: 'pass',
      nine: 'fail threshold',
      pair: 'fail nk-rule',
      giant: 'fail p-ratio nk-rule',
      edge: 'fail nk-rule',
      pedge: 'fail nk-rule',
      neg: 'review negative',
      zeros: 'fail p-ratio',
    });
    expect(r.cells.find((c) => c.ref === 'giant')).toMatchObject({ count: 10, total: 1018 });
  });

  test('several group columns form the cell key', () => {
    const rows = ['sex,age,value'];
    for (let i = 0; i < 12; i++) rows.push(`F,40-49,${100 + i}`);
    rows.push('M,40-49,7');
    const r = checkFile('two.csv', rows.join('\n'));
    expect(cellsOf(r)).toEqual({ 'F/40-49': 'pass', 'M/40-49': 'fail threshold p-ratio nk-rule' });
    expect(r.cells[0]!.labels).toEqual(['F', '40-49']);
  });

  test('magnitudeHits follows the parameters it is given', () => {
    const p = { ...ACRO_DEFAULTS, threshold: 3, nkK: 0.95 };
    expect(magnitudeHits([50, 50, 10], p).map((h) => h.rule)).toEqual([]);
    expect(magnitudeHits([50, 50, 5], p).map((h) => h.rule)).toEqual(['nk-rule']);
  });
});

describe('regression results: residual degrees of freedom', () => {
  // df_resid = observations - estimated parameters (intercept included), worked out by hand:
  // 13 - 3 = 10 passes (the boundary), 12 - 3 = 9 fails, 40 - 5 = 35 passes, 3 - 3 = 0 fails.
  test('a model with fewer than 10 residual df fails, 10 passes', () => {
    const r = checkFile(
      'models.csv',
      'model,n_obs,n_params,df_resid,r2\nage+sex,13,3,10,0.41\nage+sex+ward,12,3,9,0.52\n' +
        'full,40,5,35,0.61\nsaturated,3,3,0,1.0\n',
    );
    expect(r.shape).toBe('regression');
    expect(cellsOf(r)).toEqual({
      'age+sex/df_resid': 'pass',
      'age+sex+ward/df_resid': 'fail residual-df',
      'full/df_resid': 'pass',
      'saturated/df_resid': 'fail residual-df',
    });
    expect(r.cells.map((c) => c.count)).toEqual([10, 9, 35, 0]);
    expect(r.verdict).toBe('fail');
    expect(r.summary).toEqual({ pass: 2, review: 0, fail: 2 });
    expect(r.cells[1]!.hits[0]!.detail).toBe('residual degrees of freedom 9 < 10');
  });

  test('per-coefficient rows (statsmodels export) and R naming; an empty df is review', () => {
    const r = checkFile(
      'coef.tsv',
      'term\testimate\tstd_err\tdf.residual\n(Intercept)\t1.2\t0.3\t27\nage\t0.04\t0.01\t27\nbmi\t0.5\t0.2\t\n',
    );
    expect(r.shape).toBe('regression');
    expect(cellsOf(r)).toEqual({
      '(Intercept)/df.residual': 'pass',
      'age/df.residual': 'pass',
      'bmi/df.residual': 'review missing',
    });
    expect(r.verdict).toBe('review');
  });

  test('a fractional or negative df is a parse failure naming line and field', () => {
    const frac = checkFile('m.csv', 'model,df_resid\na,9.5\n');
    expect(frac.verdict).toBe('fail');
    expect(frac.hits[0]).toMatchObject({ rule: 'parse' });
    expect(frac.hits[0]!.detail).toMatch(/^line 2, field 2: /);
    expect(checkFile('m.csv', 'model,df_resid\na,-1\n').hits[0]!.rule).toBe('parse');
  });

  test('the threshold parameter drives the rule, as in ACRO', () => {
    const r = checkFile('m.csv', 'model,df_resid\na,9\n', { parameters: { threshold: 5 } });
    expect(r.verdict).toBe('pass');
  });
});

describe('files that are not tables, and tables that are broken', () => {
  test('a non-table file needs a person', () => {
    const r = checkFile('figure.png', '\u0089PNG');
    expect(r).toMatchObject({ shape: 'unsupported', verdict: 'review', cells: [] });
    expect(r.hits[0]!.rule).toBe('not-a-table');
  });

  test.each([
    ['a,b\nx,"12\n', /line 2, column 3: unterminated quoted field/],
    ['a,b\nx,1,2\n', /line 2, column 1: row has 3 fields, the header has 2/],
    ['a,b\nx,1"2\n', /line 2, column 4: quote inside an unquoted field/],
    ['a,b\nx,"1"2\n', /line 2, column 6: unexpected character after a closing quote/],
    ['a,b\rx,1', /line 1, column 4: carriage return without a line feed/],
    ['a,b\nx,twelve\n', /line 2, field 2: "twelve" is not a number/],
    ['a\nx\n', /a frequency table needs a label column and a count column/],
    ['', /the table is empty/],
  ])('%j fails with a clear message', (text, msg) => {
    const r = checkFile('t.csv', text);
    expect(r.verdict).toBe('fail');
    expect(r.hits).toHaveLength(1);
    expect(r.hits[0]).toMatchObject({ rule: 'parse', verdict: 'fail' });
    expect(r.hits[0]!.detail).toMatch(msg);
  });
});

describe('the CSV reader under fuzzing', () => {
  const field = fc.string({
    unit: fc.constantFrom('a', 'b', ',', '"', '\n', '\r\n', '\t', ' ', 'é', '1'),
  });
  const quote = (s: string): string =>
    /[",\r\n\t]/.test(s) || s === '' ? `"${s.replace(/"/g, '""')}"` : s;

  test('reads back what an RFC 4180 writer wrote', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 5 }).chain((w) =>
          fc.array(fc.array(field, { minLength: w, maxLength: w }), {
            minLength: 1,
            maxLength: 6,
          }),
        ),
        fc.constantFrom(',', '\t') as fc.Arbitrary<',' | '\t'>,
        fc.constantFrom('\n', '\r\n'),
        fc.boolean(),
        (rows, delim, eol, finalEol) => {
          const text = rows.map((r) => r.map(quote).join(delim)).join(eol) + (finalEol ? eol : '');
          expect(parseDelimited(text, delim)).toEqual(rows);
        },
      ),
      { numRuns: 500 },
    );
  });

  test('any text: a table or a TableParseError, never anything else', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 200 }), (text) => {
        try {
          const rows = parseDelimited(text);
          expect(rows.length).toBeGreaterThan(0);
          expect(new Set(rows.map((r) => r.length)).size).toBe(1);
        } catch (e) {
          expect(e).toBeInstanceOf(TableParseError);
        }
      }),
      { numRuns: 2000 },
    );
  });

  test('checkFile never throws and its verdict agrees with its cells', () => {
    const csvish = fc.string({
      unit: fc.constantFrom('0', '1', '9', '12', '-', '.', ',', '\n', '"', 'x', 'value'),
      maxLength: 120,
    });
    fc.assert(
      fc.property(csvish, fc.constantFrom('a.csv', 'a.tsv', 'a.txt'), (text, name) => {
        const r = checkFile(name, text);
        const rank = { pass: 0, review: 1, fail: 2 } as const;
        const worst = [...r.cells.map((c) => c.verdict), ...r.hits.map((h) => h.verdict)].reduce(
          (w, v) => (rank[v] > rank[w] ? v : w),
          'pass' as 'pass' | 'review' | 'fail',
        );
        expect(r.verdict).toBe(worst);
        expect(r.summary.pass + r.summary.review + r.summary.fail).toBe(r.cells.length);
      }),
      { numRuns: 2000 },
    );
  });
});
