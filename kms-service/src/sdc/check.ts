/**
 * Statistical disclosure control of output tables, with the rules and defaults ACRO ships:
 * a cell built from fewer than 10 records fails (threshold), zeros are disclosive, a magnitude
 * cell fails the p-ratio rule when (total - top1 - top2) / top1 < 0.10 and the nk-dominance rule
 * when its 2 largest contributions make up >= 90% of its total; negative values go to review;
 * a regression whose residual degrees of freedom are below the threshold fails (as ACRO's
 * `dof < THRESHOLD`: so few spare observations let coefficients and residuals reveal records).
 *
 * Pure: text in, a machine-readable record out. The client computes it inside the TRE (the KMS
 * never sees plaintext) and attaches it to the egress request; reviewers see it beside the file.
 */
import { delimiterFor, parseDelimited, TableParseError, type Delimiter } from './csv.js';

export interface SdcParameters {
  threshold: number;
  pRatio: number;
  nkN: number;
  nkK: number;
  zerosAreDisclosive: boolean;
}

export const ACRO_DEFAULTS: Readonly<SdcParameters> = Object.freeze({
  threshold: 10,
  pRatio: 0.1,
  nkN: 2,
  nkK: 0.9,
  zerosAreDisclosive: true,
});

export type Verdict = 'pass' | 'review' | 'fail';
export type RuleName =
  | 'threshold'
  | 'zero'
  | 'p-ratio'
  | 'nk-rule'
  | 'residual-df'
  | 'negative'
  | 'missing'
  | 'parse'
  | 'not-a-table';

export interface RuleHit {
  rule: RuleName;
  verdict: Exclude<Verdict, 'pass'>;
  detail: string;
}

export interface CellResult {
  /** Stable reference for justifications: `row/column` labels, or the group key in long form. */
  ref: string;
  /** Labels of the cell: [row label, column name] or the group values. */
  labels: string[];
  /** The count (frequency) or the number of contributions (long form). */
  count: number | null;
  /** The sum of contributions (long form only). */
  total?: number;
  verdict: Verdict;
  hits: RuleHit[];
}

export type TableShape = 'frequency' | 'long' | 'regression';

export interface FileCheck {
  v: 1;
  path: string;
  shape: TableShape | 'unsupported';
  verdict: Verdict;
  parameters: SdcParameters;
  summary: Record<Verdict, number>;
  cells: CellResult[];
  /** File-level findings: a table that does not parse, or a file that is no table. */
  hits: RuleHit[];
}

const RANK: Record<Verdict, number> = { pass: 0, review: 1, fail: 2 };
const worst = (hits: readonly RuleHit[]): Verdict =>
  hits.reduce<Verdict>((w, h) => (RANK[h.verdict] > RANK[w] ? h.verdict : w), 'pass');

const NUMBER = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

function num(field: string, line: number, column: number): number | null {
  const s = field.trim();
  if (s === '') return null;
  if (!NUMBER.test(s))
    throw new TableParseError(`"${s.slice(0, 40)}" is not a number`, line, column, 'field');
  const v = Number(s);
  if (!Number.isFinite(v))
    throw new TableParseError(`${s.slice(0, 40)} is out of range`, line, column, 'field');
  return v;
}

function frequencyCells(rows: string[][], p: SdcParameters): CellResult[] {
  const header = rows[0]!;
  if (header.length < 2) {
    throw new TableParseError('a frequency table needs a label column and a count column', 1, 1);
  }
  const cells: CellResult[] = [];
  for (let r = 1; r < rows.length; r++) {
    const row = rows[r]!;
    for (let c = 1; c < row.length; c++) {
      const count = num(row[c]!, r + 1, c + 1);
      const hits: RuleHit[] = [];
      if (count === null) {
        hits.push({ rule: 'missing', verdict: 'review', detail: 'empty cell' });
      } else if (!Number.isInteger(count)) {
        throw new TableParseError(
          `count ${row[c]!.trim()} is not a whole number; magnitude tables must be exported in long form (group columns, then "value")`,
          r + 1,
          c + 1,
          'field',
        );
      } else if (count < 0) {
        hits.push({ rule: 'negative', verdict: 'review', detail: `negative count ${count}` });
      } else {
        if (count === 0 && p.zerosAreDisclosive) {
          hits.push({ rule: 'zero', verdict: 'fail', detail: 'zero count' });
        }
        if (count < p.threshold && (count > 0 || p.zerosAreDisclosive)) {
          hits.push({
            rule: 'threshold',
            verdict: 'fail',
            detail: `count ${count} < ${p.threshold}`,
          });
        }
      }
      const labels = [row[0]!, header[c]!];
      cells.push({ ref: labels.join('/'), labels, count, verdict: worst(hits), hits });
    }
  }
  return cells;
}

/** Rules on one magnitude cell, from its contributions. */
export function magnitudeHits(values: readonly number[], p: SdcParameters): RuleHit[] {
  const hits: RuleHit[] = [];
  const n = values.length;
  if (n < p.threshold) {
    hits.push({
      rule: 'threshold',
      verdict: 'fail',
      detail: `${n} contributions < ${p.threshold}`,
    });
  }
  if (values.some((v) => v < 0)) {
    // p-ratio and dominance assume non-negative contributions; a person has to judge.
    hits.push({ rule: 'negative', verdict: 'review', detail: 'negative contributions' });
    return hits;
  }
  const sorted = [...values].sort((a, b) => b - a);
  const total = sorted.reduce((a, b) => a + b, 0);
  const top1 = sorted[0] ?? 0;
  const top2 = sorted[1] ?? 0;
  // As ACRO: with a largest contribution of 0 the remainder itself is the ratio (0 fails).
  const ratio = top1 === 0 ? total - top1 - top2 : (total - top1 - top2) / top1;
  if (ratio < p.pRatio) {
    hits.push({
      rule: 'p-ratio',
      verdict: 'fail',
      detail: `(total - top1 - top2) / top1 = ${round(ratio)} < ${p.pRatio}`,
    });
  }
  if (total === 0) return hits;
  const topN = sorted.slice(0, p.nkN).reduce((a, b) => a + b, 0);
  if (topN / total >= p.nkK) {
    hits.push({
      rule: 'nk-rule',
      verdict: 'fail',
      detail: `top ${p.nkN} contributions are ${round((100 * topN) / total)}% >= ${100 * p.nkK}% of the total`,
    });
  }
  return hits;
}

const round = (x: number): number => Math.round(x * 10000) / 10000;

function longCells(rows: string[][], p: SdcParameters): CellResult[] {
  const header = rows[0]!;
  const groups = new Map<string, { labels: string[]; values: number[]; missing: number }>();
  const vc = header.length - 1;
  for (let r = 1; r < rows.length; r++) {
    const row = rows[r]!;
    const labels = row.slice(0, vc);
    const key = JSON.stringify(labels);
    let g = groups.get(key);
    if (!g) {
      g = { labels, values: [], missing: 0 };
      groups.set(key, g);
    }
    const v = num(row[vc]!, r + 1, vc + 1);
    if (v === null) g.missing++;
    else g.values.push(v);
  }
  const cells: CellResult[] = [];
  for (const g of groups.values()) {
    const hits = magnitudeHits(g.values, p);
    if (g.missing > 0) {
      hits.push({ rule: 'missing', verdict: 'review', detail: `${g.missing} empty values` });
    }
    cells.push({
      ref: g.labels.join('/'),
      labels: g.labels,
      count: g.values.length,
      total: g.values.reduce((a, b) => a + b, 0),
      verdict: worst(hits),
      hits,
    });
  }
  return cells;
}

/** Header names of the residual degrees of freedom (statsmodels' `df_resid`, R's `df.residual`). */
const RESIDUAL_DF = new Set(['df_resid', 'df.residual', 'residual_df', 'df_residual']);

/**
 * The shape a header implies: a residual-degrees-of-freedom column means regression results,
 * a last column named `value` long form, anything else a frequency table.
 */
export function shapeOf(header: readonly string[]): TableShape {
  const names = header.map((x) => x.trim().toLowerCase());
  if (names.some((x) => RESIDUAL_DF.has(x))) return 'regression';
  const last = names[names.length - 1];
  return header.length >= 2 && last === 'value' ? 'long' : 'frequency';
}

/**
 * Regression results, one row per model (or per coefficient, each row carrying its model's
 * residual df): the row fails when its residual degrees of freedom are below the threshold.
 * Coefficients themselves are not checked, as in ACRO.
 */
function regressionCells(rows: string[][], p: SdcParameters): CellResult[] {
  const header = rows[0]!;
  const col = header.findIndex((x) => RESIDUAL_DF.has(x.trim().toLowerCase()));
  const cells: CellResult[] = [];
  for (let r = 1; r < rows.length; r++) {
    const row = rows[r]!;
    const df = num(row[col]!, r + 1, col + 1);
    const hits: RuleHit[] = [];
    if (df === null) {
      hits.push({ rule: 'missing', verdict: 'review', detail: 'no residual degrees of freedom' });
    } else if (!Number.isInteger(df) || df < 0) {
      throw new TableParseError(
        `residual degrees of freedom ${row[col]!.trim()} must be a whole number >= 0`,
        r + 1,
        col + 1,
        'field',
      );
    } else if (df < p.threshold) {
      hits.push({
        rule: 'residual-df',
        verdict: 'fail',
        detail: `residual degrees of freedom ${df} < ${p.threshold}`,
      });
    }
    const label = col === 0 ? `row ${r}` : row[0]!;
    const labels = [label, header[col]!];
    cells.push({ ref: labels.join('/'), labels, count: df, verdict: worst(hits), hits });
  }
  return cells;
}

const TABLE_FILE = /\.(csv|tsv|tab)$/i;

export interface CheckOptions {
  parameters?: Partial<SdcParameters>;
  delimiter?: Delimiter;
}

function record(
  path: string,
  shape: FileCheck['shape'],
  parameters: SdcParameters,
  cells: CellResult[],
  hits: RuleHit[],
): FileCheck {
  const summary: Record<Verdict, number> = { pass: 0, review: 0, fail: 0 };
  for (const c of cells) summary[c.verdict]++;
  let verdict = worst(hits);
  for (const c of cells) if (RANK[c.verdict] > RANK[verdict]) verdict = c.verdict;
  return { v: 1, path, shape, verdict, parameters, summary, cells, hits };
}

/**
 * Checks one exported file. Tables (`.csv`, `.tsv`, `.tab`) get a verdict per cell; any other
 * file is `review` (a person must look at it); a table that cannot be read is `fail`.
 */
export function checkFile(path: string, text: string, opts: CheckOptions = {}): FileCheck {
  const parameters = { ...ACRO_DEFAULTS, ...opts.parameters };
  if (!TABLE_FILE.test(path) && opts.delimiter === undefined) {
    return record(
      path,
      'unsupported',
      parameters,
      [],
      [{ rule: 'not-a-table', verdict: 'review', detail: 'not a CSV/TSV table: check it by hand' }],
    );
  }
  try {
    const rows = parseDelimited(text, opts.delimiter ?? delimiterFor(path));
    const shape = shapeOf(rows[0]!);
    const cells =
      shape === 'long'
        ? longCells(rows, parameters)
        : shape === 'regression'
          ? regressionCells(rows, parameters)
          : frequencyCells(rows, parameters);
    return record(path, shape, parameters, cells, []);
  } catch (e) {
    if (!(e instanceof TableParseError)) throw e;
    return record(
      path,
      'unsupported',
      parameters,
      [],
      [{ rule: 'parse', verdict: 'fail', detail: e.message }],
    );
  }
}
