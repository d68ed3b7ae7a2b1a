/**
 * Read buffers for the VNC sockets, carved from 1 MiB slabs that are reused once every piece
 * of them has been written out. Reading up to READ_SIZE at once (Node's default is 64 KiB)
 * means fewer reads, events and frames for a full-screen update; the filter forwards the
 * pieces as they are, so nothing is copied. Reusing slabs matters as much: a fresh slab per
 * megabyte costs page faults (the kernel zeroes every page on first touch) and makes V8 run
 * full garbage collections for the external memory, which together took a fifth of the
 * proxy's CPU time at full speed.
 *
 * Safety rests on one rule: a slab goes back to the pool only when it is retired (no read
 * will land in it again) and every piece handed out of it has been released, i.e. the write
 * that carried it has completed. A piece that was never held keeps its slab alive through
 * the garbage collector, never through the pool, so forgetting a hold can cost a copy of
 * memory but never hands out bytes still waiting to be written.
 */

export const READ_SIZE = 256 * 1024;
const SLAB_SIZE = 4 * READ_SIZE;
/** Free slabs kept for reuse across all sockets of the process. */
const POOL_LIMIT = 16;

interface Slab {
  readonly bytes: Buffer;
  /** Pieces handed out and not released yet. */
  refs: number;
  retired: boolean;
}

const free: Buffer[] = [];
const slabOf = new WeakMap<ArrayBufferLike, Slab>();

function newSlab(): Slab {
  const bytes = free.pop() ?? Buffer.allocUnsafeSlow(SLAB_SIZE);
  const slab = { bytes, refs: 0, retired: false };
  slabOf.set(bytes.buffer, slab);
  return slab;
}

function recycle(slab: Slab): void {
  slabOf.delete(slab.bytes.buffer);
  if (free.length < POOL_LIMIT) free.push(slab.bytes);
}

/**
 * Keeps the slab under `piece` out of the pool until `releaseReadBuffer(piece)`. Pieces that
 * do not come from a slab (copies the filter made) are ignored by both calls.
 */
export function holdReadBuffer(piece: Buffer): void {
  const slab = slabOf.get(piece.buffer);
  if (slab) slab.refs += 1;
}

export function releaseReadBuffer(piece: Buffer): void {
  const slab = slabOf.get(piece.buffer);
  if (!slab) return;
  slab.refs -= 1;
  if (slab.refs === 0 && slab.retired) recycle(slab);
}

/** Free slabs in the pool (for tests). */
export function pooledSlabs(): number {
  return free.length;
}

/**
 * The read buffers of one socket. One instance per socket: Node asks for the next buffer
 * right after each read, ahead of the data, so a shared instance would hand the same bytes
 * to two sockets.
 */
export class ReadSlabs {
  private slab: Slab | undefined;
  private offset = 0;

  next(): Buffer {
    if (!this.slab || SLAB_SIZE - this.offset < READ_SIZE) {
      this.retire();
      this.slab = newSlab();
      this.offset = 0;
    }
    return this.slab.bytes.subarray(this.offset, this.offset + READ_SIZE);
  }

  used(bytes: number): void {
    this.offset += bytes;
  }

  /** The socket is done reading: its current slab goes back once its pieces are released. */
  retire(): void {
    const slab = this.slab;
    this.slab = undefined;
    if (!slab) return;
    slab.retired = true;
    if (slab.refs === 0) recycle(slab);
  }
}
