/**
 * The pickup answer on the wire. The KEK travels as raw bytes after the session's
 * configuration, so neither the bridge nor the job agent ever holds it in a JavaScript string
 * (strings cannot be wiped; buffers are zeroed after use).
 *
 * Layout: uint32 big-endian length of the configuration, the configuration as UTF-8 JSON (an
 * object), then the KEK hand-over bytes (none when the session was started locked).
 */
export const PICKUP_MEDIA_TYPE = 'application/vnd.tre.pickup';

/** Far above any real configuration; bounds what a damaged length field can make us parse. */
export const MAX_PICKUP_CONFIG = 1 << 20;
const MAX_KEK_HANDOVER = 1 << 16;

export class PickupWireError extends Error {
  constructor(message: string) {
    super(`malformed pickup answer: ${message}`);
    this.name = 'PickupWireError';
  }
}

export function encodePickup(config: Record<string, unknown>, kek: Uint8Array | null): Buffer {
  const json = Buffer.from(JSON.stringify(config), 'utf8');
  if (json.length > MAX_PICKUP_CONFIG) throw new PickupWireError('configuration too large');
  const out = Buffer.alloc(4 + json.length + (kek?.length ?? 0));
  out.writeUInt32BE(json.length, 0);
  json.copy(out, 4);
  if (kek) out.set(kek, 4 + json.length);
  return out;
}

/** The KEK comes back in a buffer of its own; the caller zeroes `body` and, after use, the KEK. */
export function decodePickup(body: Uint8Array): {
  config: Record<string, unknown>;
  kek: Buffer | null;
} {
  const buf = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  if (buf.length < 4) throw new PickupWireError('shorter than its length field');
  const n = buf.readUInt32BE(0);
  if (n > MAX_PICKUP_CONFIG || 4 + n > buf.length) {
    throw new PickupWireError('configuration length beyond the answer');
  }
  let config: unknown;
  try {
    config = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(buf.subarray(4, 4 + n)));
  } catch {
    throw new PickupWireError('configuration is not UTF-8 JSON');
  }
  if (typeof config !== 'object' || config === null || Array.isArray(config)) {
    throw new PickupWireError('configuration is not an object');
  }
  const rest = buf.subarray(4 + n);
  if (rest.length > MAX_KEK_HANDOVER) throw new PickupWireError('key hand-over too large');
  return {
    config: config as Record<string, unknown>,
    kek: rest.length > 0 ? Buffer.from(rest) : null,
  };
}
