/**
 * Raised when a byte stream cannot be framed with certainty. The proxy closes both sides:
 * forwarding bytes it does not understand could smuggle a clipboard message past the filter.
 * `reason` is one loggable line and never contains payload bytes.
 */
export class RfbProtocolError extends Error {
  readonly reason: string;

  constructor(reason: string) {
    super(`RFB protocol error: ${reason}`);
    this.name = 'RfbProtocolError';
    this.reason = reason;
  }
}
