export { RfbFilter, type RfbFilterOptions, type Direction, type FilteredEvent } from './filter.js';
export { RfbProtocolError } from './errors.js';
export { Encoding, isAllowedEncoding } from './encodings.js';
