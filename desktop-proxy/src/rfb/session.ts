import { RfbProtocolError } from './errors.js';
import type { PixelFormat } from './pixel-format.js';

export type Direction = 'client-to-server' | 'server-to-client';

export interface FilteredEvent {
  direction: Direction;
  kind: string;
  bytes: number;
}

/** Where the connection is; the handshake alternates strictly between the two sides. */
export type Phase =
  | 'server-version'
  | 'client-version'
  | 'security-types'
  | 'security-choice'
  | 'vnc-auth-challenge'
  | 'vnc-auth-response'
  | 'security-result'
  | 'security-failure-reason'
  | 'client-init'
  | 'server-init'
  | 'normal'
  | 'closed';

export interface Limits {
  maxCutTextLength: number;
  /** Desktop names and failure reasons; they are forwarded, so they must fit the header buffer. */
  maxStringLength: number;
  maxZlibLength: number;
  maxEncodings: number;
  maxCursorSize: number;
}

/** State shared by the two directions: negotiated version, pixel format, framebuffer size. */
export class Session {
  phase: Phase = 'server-version';
  serverMinorVersion = 0;
  minorVersion = 0;
  offeredSecurityTypes: number[] = [];
  securityType = 0;
  clientInitDone = false;
  serverPixelFormat: PixelFormat | undefined;
  clientPixelFormat: PixelFormat | undefined;
  fbWidth = 0;
  fbHeight = 0;
  /** Set once the client asked for updates: later pixel format changes would be ambiguous. */
  updatesRequested = false;

  constructor(
    readonly limits: Limits,
    private readonly onFiltered: ((event: FilteredEvent) => void) | undefined,
  ) {}

  pixelFormat(): PixelFormat {
    const pf = this.clientPixelFormat ?? this.serverPixelFormat;
    if (!pf) throw new RfbProtocolError('framebuffer data before the pixel format is known');
    return pf;
  }

  filtered(direction: Direction, kind: string, bytes: number): void {
    this.onFiltered?.({ direction, kind, bytes });
  }
}
