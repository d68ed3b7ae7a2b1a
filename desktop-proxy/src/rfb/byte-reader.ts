import { RfbProtocolError } from './errors.js';

const EMPTY = Buffer.alloc(0);

/**
 * One direction of the stream as seen by a parser: a cursor over the current chunk plus a
 * small accumulator for message headers that straddle chunk boundaries.
 *
 * Bytes the parser accepts are forwarded as zero-copy slices of the incoming chunk; only
 * headers split across chunks are copied (they are small and bounded by the accumulator).
 * A header is forwarded only after `commit()`, i.e. once it has been validated as a whole.
 *
 * `need(total)` is cumulative from the start of the current header and has no side effects
 * besides buffering, so a parser can re-run its header parsing from the top whenever more
 * bytes arrive.
 */
export class ByteReader {
  /** After a successful `need()`: the buffer holding the header and the header's offset in it. */
  h: Buffer = EMPTY;
  ho = 0;

  private chunk: Buffer = EMPTY;
  private end = 0;
  private pos = 0;
  /** Start of the not yet forwarded, already accepted bytes of the chunk. */
  private passStart = 0;
  /** Start of the current header in the chunk (when it is not in the accumulator). */
  private hdrStart = 0;
  private readonly acc: Buffer;
  private accLen = 0;
  private inAcc = false;

  constructor(
    private readonly emit: (chunk: Buffer) => void,
    maxHeader: number,
  ) {
    this.acc = Buffer.alloc(maxHeader);
  }

  begin(chunk: Buffer): void {
    this.chunk = chunk;
    this.end = chunk.length;
    this.pos = 0;
    this.passStart = 0;
    if (!this.inAcc) this.hdrStart = 0;
  }

  /** Forwards what was accepted from the current chunk and lets go of it. */
  finish(): void {
    this.flushTo(this.pos);
    // Keep no reference to the chunk: its read buffer is reused once it has been written out.
    if (!this.inAcc) this.h = EMPTY;
    this.chunk = EMPTY;
    this.end = 0;
    this.pos = 0;
    this.passStart = 0;
    this.hdrStart = 0;
  }

  /** Bytes of the current chunk not consumed yet. */
  get available(): number {
    return this.end - this.pos;
  }

  /** True when a header is partly buffered (the stream stopped in the middle of a message). */
  get midHeader(): boolean {
    return this.inAcc;
  }

  /**
   * Makes the first `total` bytes of the current header readable at `h[ho..]`. Returns false
   * (after buffering what there is) when the chunk ends first.
   */
  need(total: number): boolean {
    if (!this.inAcc) {
      if (this.end - this.hdrStart >= total) {
        this.h = this.chunk;
        this.ho = this.hdrStart;
        this.pos = this.hdrStart + total;
        return true;
      }
      if (total > this.acc.length) {
        throw new RfbProtocolError(
          `header of ${total} bytes exceeds the ${this.acc.length}-byte limit`,
        );
      }
      this.flushTo(this.hdrStart);
      this.chunk.copy(this.acc, 0, this.hdrStart, this.end);
      this.accLen = this.end - this.hdrStart;
      this.inAcc = true;
      this.pos = this.end;
      this.passStart = this.end;
      return false;
    }
    if (total > this.acc.length) {
      throw new RfbProtocolError(
        `header of ${total} bytes exceeds the ${this.acc.length}-byte limit`,
      );
    }
    const missing = total - this.accLen;
    if (missing > 0) {
      const n = Math.min(missing, this.end - this.pos);
      this.chunk.copy(this.acc, this.accLen, this.pos, this.pos + n);
      this.accLen += n;
      this.pos += n;
      this.passStart = this.pos;
      if (n < missing) return false;
    }
    this.h = this.acc;
    this.ho = 0;
    return true;
  }

  /** Accepts the header read so far: it is forwarded unchanged. */
  commit(): void {
    if (this.inAcc) {
      this.emit(Buffer.from(this.acc.subarray(0, this.accLen)));
      this.inAcc = false;
      this.accLen = 0;
      this.passStart = this.pos;
    }
    this.hdrStart = this.pos;
  }

  /** Drops the header read so far: it is not forwarded. */
  discard(): void {
    if (this.inAcc) {
      this.inAcc = false;
      this.accLen = 0;
    } else {
      this.flushTo(this.hdrStart);
    }
    this.passStart = this.pos;
    this.hdrStart = this.pos;
  }

  /** Drops the header read so far and forwards `replacement` in its place. */
  replace(replacement: Buffer): void {
    this.discard();
    this.emit(replacement);
  }

  /** Accepts up to `n` body bytes for forwarding; returns how many were available. */
  pass(n: number): number {
    const k = Math.min(n, this.end - this.pos);
    this.pos += k;
    this.hdrStart = this.pos;
    return k;
  }

  /** Drops up to `n` body bytes; returns how many were available. */
  skip(n: number): number {
    this.flushTo(this.pos);
    const k = Math.min(n, this.end - this.pos);
    this.pos += k;
    this.passStart = this.pos;
    this.hdrStart = this.pos;
    return k;
  }

  private flushTo(x: number): void {
    if (x > this.passStart) this.emit(this.chunk.subarray(this.passStart, x));
    this.passStart = x;
  }
}
