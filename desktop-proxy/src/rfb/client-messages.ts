import type { ByteReader } from './byte-reader.js';
import { isAllowedEncoding } from './encodings.js';
import { RfbProtocolError } from './errors.js';
import { readPixelFormat } from './pixel-format.js';
import type { Session } from './session.js';
import { cutTextLength } from './cut-text.js';

const SET_PIXEL_FORMAT = 0;
const SET_ENCODINGS = 2;
const FRAMEBUFFER_UPDATE_REQUEST = 3;
const KEY_EVENT = 4;
const POINTER_EVENT = 5;
const CLIENT_CUT_TEXT = 6;
const ENABLE_CONTINUOUS_UPDATES = 150;
const CLIENT_FENCE = 248;
const QEMU_CLIENT_MESSAGE = 255;
const QEMU_EXTENDED_KEY_EVENT = 0;
const MAX_FENCE_PAYLOAD = 64;

/** Frames the client's normal-phase messages; drops cut text, rewrites SetEncodings. */
export class ClientMessageParser {
  private dropRemaining = 0;

  constructor(private readonly s: Session) {}

  run(r: ByteReader): void {
    while (r.available > 0) {
      if (this.dropRemaining > 0) {
        this.dropRemaining -= r.skip(this.dropRemaining);
      } else if (!this.message(r)) {
        return;
      }
    }
  }

  private message(r: ByteReader): boolean {
    if (!r.need(1)) return false;
    const type = r.h[r.ho]!;
    switch (type) {
      case SET_PIXEL_FORMAT: {
        if (!r.need(20)) return false;
        const pf = readPixelFormat(r.h, r.ho + 4);
        // The server may already be encoding an update in the old format; the filter could
        // not tell which format the next rectangle uses, so only the initial change is allowed.
        if (this.s.updatesRequested) {
          throw new RfbProtocolError('SetPixelFormat after framebuffer updates were requested');
        }
        r.commit();
        this.s.clientPixelFormat = pf;
        return true;
      }
      case SET_ENCODINGS:
        return this.setEncodings(r);
      case FRAMEBUFFER_UPDATE_REQUEST:
      case ENABLE_CONTINUOUS_UPDATES:
        if (!r.need(10)) return false;
        r.commit();
        this.s.updatesRequested = true;
        return true;
      case KEY_EVENT:
        if (!r.need(8)) return false;
        r.commit();
        return true;
      case POINTER_EVENT:
        if (!r.need(6)) return false;
        r.commit();
        return true;
      case CLIENT_CUT_TEXT: {
        if (!r.need(8)) return false;
        const { length, extended } = cutTextLength(
          r.h,
          r.ho + 4,
          this.s.limits.maxCutTextLength,
          'ClientCutText',
        );
        r.discard();
        this.dropRemaining = length;
        this.s.filtered(
          'client-to-server',
          extended ? 'extended-clipboard' : 'client-cut-text',
          8 + length,
        );
        return true;
      }
      case CLIENT_FENCE: {
        if (!r.need(9)) return false;
        const length = r.h[r.ho + 8]!;
        if (length > MAX_FENCE_PAYLOAD)
          throw new RfbProtocolError(`ClientFence payload of ${length} bytes`);
        if (!r.need(9 + length)) return false;
        r.commit();
        return true;
      }
      case QEMU_CLIENT_MESSAGE: {
        if (!r.need(2)) return false;
        const subtype = r.h[r.ho + 1]!;
        if (subtype !== QEMU_EXTENDED_KEY_EVENT) {
          throw new RfbProtocolError(`unsupported QEMU client message subtype ${subtype}`);
        }
        if (!r.need(12)) return false;
        r.commit();
        return true;
      }
      default:
        throw new RfbProtocolError(`unsupported client message type ${type}`);
    }
  }

  private setEncodings(r: ByteReader): boolean {
    if (!r.need(4)) return false;
    const count = r.h.readUInt16BE(r.ho + 2);
    if (count > this.s.limits.maxEncodings) {
      throw new RfbProtocolError(`SetEncodings with ${count} encodings`);
    }
    if (!r.need(4 + 4 * count)) return false;
    const kept: number[] = [];
    for (let i = 0; i < count; i++) {
      const encoding = r.h.readInt32BE(r.ho + 4 + 4 * i);
      if (isAllowedEncoding(encoding)) kept.push(encoding);
    }
    if (kept.length === count) {
      r.commit();
      return true;
    }
    const out = Buffer.alloc(4 + 4 * kept.length);
    out[0] = SET_ENCODINGS;
    out.writeUInt16BE(kept.length, 2);
    kept.forEach((encoding, i) => out.writeInt32BE(encoding, 4 + 4 * i));
    r.replace(out);
    this.s.filtered('client-to-server', 'set-encodings-stripped', 4 * (count - kept.length));
    return true;
  }
}
