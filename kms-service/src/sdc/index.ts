export { parseDelimited, delimiterFor, TableParseError, MAX_TABLE_CHARS } from './csv.js';
export type { Delimiter } from './csv.js';
export { checkFile, magnitudeHits, shapeOf, ACRO_DEFAULTS } from './check.js';
export type {
  CellResult,
  CheckOptions,
  FileCheck,
  RuleHit,
  RuleName,
  SdcParameters,
  TableShape,
  Verdict,
} from './check.js';
