import type { ByteReader } from './byte-reader.js';
import { cutTextLength } from './cut-text.js';
import { Encoding } from './encodings.js';
import { RfbProtocolError } from './errors.js';
import { hextileTile } from './hextile.js';
import { bytesPerPixel, tightPixelSize } from './pixel-format.js';
import type { Session } from './session.js';
import { tightRect } from './tight.js';

const FRAMEBUFFER_UPDATE = 0;
const SET_COLOUR_MAP_ENTRIES = 1;
const BELL = 2;
const SERVER_CUT_TEXT = 3;
const END_OF_CONTINUOUS_UPDATES = 150;
const SERVER_FENCE = 248;
const MAX_FENCE_PAYLOAD = 64;
const RECT_HEADER = 12;

const enum State {
  Message,
  Rect,
  Tile,
  Body,
  Drop,
}

/** What comes after a body: the next message, the next rectangle or the next Hextile tile. */
const enum After {
  Message,
  Rect,
  Tile,
}

/** Frames the server's normal-phase messages; drops cut text, forwards everything else. */
export class ServerMessageParser {
  private state = State.Message;
  private after = After.Message;
  private remaining = 0;
  private rectsLeft = 0;
  // The Hextile rectangle being walked tile by tile.
  private rw = 0;
  private rh = 0;
  private tile = 0;
  private tilesX = 0;
  private tiles = 0;

  constructor(private readonly s: Session) {}

  /** Bytes of the current message body that the server has announced and not sent yet. */
  get bodyPending(): number {
    return this.state === State.Body ? this.remaining : 0;
  }

  run(r: ByteReader): void {
    while (r.available > 0) {
      switch (this.state) {
        case State.Body:
          this.remaining -= r.pass(this.remaining);
          if (this.remaining === 0) this.next();
          break;
        case State.Drop:
          this.remaining -= r.skip(this.remaining);
          if (this.remaining === 0) this.state = State.Message;
          break;
        case State.Message:
          if (!this.message(r)) return;
          break;
        case State.Rect:
          if (!this.rect(r)) return;
          break;
        case State.Tile:
          if (!this.hextileTile(r)) return;
          break;
      }
    }
  }

  private body(length: number, after: After): void {
    this.after = after;
    this.remaining = length;
    if (length > 0) this.state = State.Body;
    else this.next();
  }

  private next(): void {
    switch (this.after) {
      case After.Message:
        this.state = State.Message;
        break;
      case After.Rect:
        this.rectDone();
        break;
      case After.Tile:
        if (++this.tile === this.tiles) this.rectDone();
        else this.state = State.Tile;
        break;
    }
  }

  private rectDone(): void {
    this.state = --this.rectsLeft > 0 ? State.Rect : State.Message;
  }

  private message(r: ByteReader): boolean {
    if (!r.need(1)) return false;
    const type = r.h[r.ho]!;
    switch (type) {
      case FRAMEBUFFER_UPDATE: {
        if (!r.need(4)) return false;
        const rects = r.h.readUInt16BE(r.ho + 2);
        r.commit();
        this.rectsLeft = rects;
        this.state = rects > 0 ? State.Rect : State.Message;
        return true;
      }
      case SET_COLOUR_MAP_ENTRIES: {
        if (!r.need(6)) return false;
        const first = r.h.readUInt16BE(r.ho + 2);
        const count = r.h.readUInt16BE(r.ho + 4);
        if (first + count > 0x10000)
          throw new RfbProtocolError('SetColourMapEntries beyond 65536 entries');
        r.commit();
        this.body(count * 6, After.Message);
        return true;
      }
      case BELL:
      case END_OF_CONTINUOUS_UPDATES:
        r.commit();
        return true;
      case SERVER_CUT_TEXT: {
        if (!r.need(8)) return false;
        const { length, extended } = cutTextLength(
          r.h,
          r.ho + 4,
          this.s.limits.maxCutTextLength,
          'ServerCutText',
        );
        r.discard();
        this.s.filtered(
          'server-to-client',
          extended ? 'extended-clipboard' : 'server-cut-text',
          8 + length,
        );
        this.remaining = length;
        this.state = length > 0 ? State.Drop : State.Message;
        return true;
      }
      case SERVER_FENCE: {
        if (!r.need(9)) return false;
        const length = r.h[r.ho + 8]!;
        if (length > MAX_FENCE_PAYLOAD)
          throw new RfbProtocolError(`ServerFence payload of ${length} bytes`);
        if (!r.need(9 + length)) return false;
        r.commit();
        return true;
      }
      default:
        throw new RfbProtocolError(`unsupported server message type ${type}`);
    }
  }

  private rect(r: ByteReader): boolean {
    if (!r.need(RECT_HEADER)) return false;
    const h = r.h;
    const o = r.ho;
    const x = h.readUInt16BE(o);
    const y = h.readUInt16BE(o + 2);
    const w = h.readUInt16BE(o + 4);
    const ht = h.readUInt16BE(o + 6);
    const encoding = h.readInt32BE(o + 8);
    const s = this.s;
    switch (encoding) {
      case Encoding.Raw:
        this.checkBounds(x, y, w, ht, 'Raw');
        r.commit();
        this.body(w * ht * bytesPerPixel(s.pixelFormat()), After.Rect);
        return true;
      case Encoding.CopyRect:
        this.checkBounds(x, y, w, ht, 'CopyRect');
        if (!r.need(RECT_HEADER + 4)) return false;
        this.checkBounds(h.readUInt16BE(o + 12), h.readUInt16BE(o + 14), w, ht, 'CopyRect source');
        r.commit();
        this.rectDone();
        return true;
      case Encoding.RRE: {
        this.checkBounds(x, y, w, ht, 'RRE');
        const bpp = bytesPerPixel(s.pixelFormat());
        if (!r.need(RECT_HEADER + 4 + bpp)) return false;
        const subrects = r.h.readUInt32BE(r.ho + RECT_HEADER);
        if (subrects > w * ht)
          throw new RfbProtocolError(`RRE rectangle with ${subrects} subrectangles`);
        r.commit();
        this.body(subrects * (bpp + 8), After.Rect);
        return true;
      }
      case Encoding.Hextile:
        this.checkBounds(x, y, w, ht, 'Hextile');
        r.commit();
        this.rw = w;
        this.rh = ht;
        this.tile = 0;
        this.tilesX = Math.ceil(w / 16);
        this.tiles = this.tilesX * Math.ceil(ht / 16);
        if (this.tiles === 0) this.rectDone();
        else this.state = State.Tile;
        return true;
      case Encoding.ZRLE: {
        this.checkBounds(x, y, w, ht, 'ZRLE');
        if (!r.need(RECT_HEADER + 4)) return false;
        const length = r.h.readUInt32BE(r.ho + RECT_HEADER);
        if (length > s.limits.maxZlibLength)
          throw new RfbProtocolError(`ZRLE data of ${length} bytes`);
        r.commit();
        this.body(length, After.Rect);
        return true;
      }
      case Encoding.Tight:
      case Encoding.TightPNG: {
        this.checkBounds(x, y, w, ht, encoding === Encoding.Tight ? 'Tight' : 'TightPNG');
        const length = tightRect(
          r,
          RECT_HEADER,
          encoding === Encoding.TightPNG,
          w,
          ht,
          tightPixelSize(s.pixelFormat()),
        );
        if (length < 0) return false;
        r.commit();
        this.body(length, After.Rect);
        return true;
      }
      case Encoding.Cursor: {
        if (w > s.limits.maxCursorSize || ht > s.limits.maxCursorSize) {
          throw new RfbProtocolError(`cursor of ${w}x${ht} pixels`);
        }
        r.commit();
        this.body(w * ht * bytesPerPixel(s.pixelFormat()) + ((w + 7) >> 3) * ht, After.Rect);
        return true;
      }
      case Encoding.DesktopSize:
        r.commit();
        s.fbWidth = w;
        s.fbHeight = ht;
        this.rectDone();
        return true;
      case Encoding.LastRect:
        r.commit();
        this.rectsLeft = 1;
        this.rectDone();
        return true;
      case Encoding.DesktopName: {
        if (!r.need(RECT_HEADER + 4)) return false;
        const length = r.h.readUInt32BE(r.ho + RECT_HEADER);
        if (length > s.limits.maxStringLength)
          throw new RfbProtocolError(`desktop name of ${length} bytes`);
        r.commit();
        this.body(length, After.Rect);
        return true;
      }
      case Encoding.QEMUExtendedKeyEvent:
        r.commit();
        this.rectDone();
        return true;
      case Encoding.QEMULedEvent:
        if (!r.need(RECT_HEADER + 1)) return false;
        r.commit();
        this.rectDone();
        return true;
      default:
        throw new RfbProtocolError(`unsupported rectangle encoding ${encoding}`);
    }
  }

  private hextileTile(r: ByteReader): boolean {
    const col = this.tile % this.tilesX;
    const row = (this.tile - col) / this.tilesX;
    const tw = Math.min(16, this.rw - col * 16);
    const th = Math.min(16, this.rh - row * 16);
    const length = hextileTile(r, tw, th, bytesPerPixel(this.s.pixelFormat()));
    if (length < 0) return false;
    r.commit();
    this.body(length, After.Tile);
    return true;
  }

  private checkBounds(x: number, y: number, w: number, h: number, what: string): void {
    if (x + w > this.s.fbWidth || y + h > this.s.fbHeight) {
      throw new RfbProtocolError(
        `${what} rectangle outside the ${this.s.fbWidth}x${this.s.fbHeight} framebuffer`,
      );
    }
  }
}
