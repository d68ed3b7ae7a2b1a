/**
 * A strict RFC 4180 reader for the tables researchers export. Strict because a table that parses
 * differently here than in the reviewer's spreadsheet would have its disclosure check run on
 * numbers nobody sees: ragged rows, stray quotes and unterminated fields are errors, not guesses.
 */

export class TableParseError extends Error {
  readonly code = 'table_parse';
  constructor(
    message: string,
    readonly line: number,
    readonly column: number,
    /** Whether `column` counts characters (syntax errors) or fields (content errors). */
    readonly unit: 'column' | 'field' = 'column',
  ) {
    super(`line ${line}, ${unit} ${column}: ${message}`);
    this.name = 'TableParseError';
  }
}

export type Delimiter = ',' | '\t';

/** Largest table accepted; exports are meant to be aggregate outputs, not datasets. */
export const MAX_TABLE_CHARS = 16 * 1024 * 1024;

/**
 * Parses delimited text into rows of fields. Accepts LF or CRLF line ends, an optional UTF-8 BOM
 * and an optional final line end; fields may be quoted with `"` and `""` inside quotes is a quote.
 * Every row must have as many fields as the first.
 */
export function parseDelimited(text: string, delimiter: Delimiter = ','): string[][] {
  if (typeof text !== 'string') throw new TableParseError('the table is not text', 1, 1);
  if (text.length > MAX_TABLE_CHARS) {
    throw new TableParseError(`the table exceeds ${MAX_TABLE_CHARS} characters`, 1, 1);
  }
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0;
  const n = text.length;
  const rows: string[][] = [];
  let row: string[] = [];
  let line = 1;
  let lineStart = i;
  const col = (at: number): number => at - lineStart + 1;

  const endRow = (): void => {
    if (rows.length > 0 && row.length !== rows[0]!.length) {
      throw new TableParseError(
        `row has ${row.length} fields, the header has ${rows[0]!.length}`,
        line,
        1,
      );
    }
    rows.push(row);
    row = [];
  };

  if (i >= n) throw new TableParseError('the table is empty', 1, 1);
  for (;;) {
    // At the start of a field.
    let value: string;
    if (text[i] === '"') {
      const startLine = line;
      const startCol = col(i);
      i++;
      let out = '';
      for (;;) {
        if (i >= n) throw new TableParseError('unterminated quoted field', startLine, startCol);
        const q = text.indexOf('"', i);
        if (q < 0) throw new TableParseError('unterminated quoted field', startLine, startCol);
        const chunk = text.slice(i, q);
        for (let k = chunk.indexOf('\n'); k >= 0; k = chunk.indexOf('\n', k + 1)) {
          line++;
          lineStart = i + k + 1;
        }
        out += chunk;
        if (text[q + 1] === '"') {
          out += '"';
          i = q + 2;
          continue;
        }
        i = q + 1;
        break;
      }
      value = out;
      if (i < n && text[i] !== delimiter && text[i] !== '\n' && text[i] !== '\r') {
        throw new TableParseError('unexpected character after a closing quote', line, col(i));
      }
    } else {
      let j = i;
      while (j < n) {
        const c = text[j];
        if (c === delimiter || c === '\n' || c === '\r') break;
        if (c === '"') throw new TableParseError('quote inside an unquoted field', line, col(j));
        j++;
      }
      value = text.slice(i, j);
      i = j;
    }
    row.push(value);
    if (i >= n) {
      endRow();
      break;
    }
    const c = text[i];
    if (c === delimiter) {
      i++;
      continue;
    }
    if (c === '\r') {
      if (text[i + 1] !== '\n')
        throw new TableParseError('carriage return without a line feed', line, col(i));
      i++;
    }
    // c is now a line feed.
    i++;
    endRow();
    line++;
    lineStart = i;
    if (i >= n) break;
  }
  return rows;
}

/** The delimiter a file name implies: `.tsv`/`.tab` are tab-separated, everything else comma. */
export function delimiterFor(path: string): Delimiter {
  return /\.(tsv|tab)$/i.test(path) ? '\t' : ',';
}
