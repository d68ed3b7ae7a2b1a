import { ByteReader } from './byte-reader.js';
import { ClientMessageParser } from './client-messages.js';
import { RfbProtocolError } from './errors.js';
import {
  clientHandshakeStep,
  isClientHandshakePhase,
  isServerHandshakePhase,
  serverHandshakeStep,
} from './handshake.js';
import { ServerMessageParser } from './server-messages.js';
import { Session, type Direction, type FilteredEvent } from './session.js';

export interface RfbFilterOptions {
  /** Bytes to forward to the VNC server (called synchronously from the push methods). */
  toServer(chunk: Buffer): void;
  /** Bytes to forward to the browser/client. */
  toClient(chunk: Buffer): void;
  /** A message was dropped or rewritten (for logs and metrics). */
  onFiltered?(event: FilteredEvent): void;
  /** Longest cut text the filter skips while dropping it; longer ones fail closed. */
  maxCutTextLength?: number;
}

export type { Direction, FilteredEvent };

const DEFAULT_MAX_CUT_TEXT = 16 * 1024 * 1024;
const MAX_STRING = 4096;
/** Largest header the filter ever buffers: SetEncodings with MAX_ENCODINGS entries. */
const MAX_ENCODINGS = 1024;
const MAX_HEADER = 4 + 4 * MAX_ENCODINGS + 64;

/**
 * An RFB (VNC) stream filter that guarantees no clipboard content crosses it: it parses the
 * handshake and every message in both directions, drops ClientCutText/ServerCutText
 * (Extended Clipboard forms included), removes from SetEncodings every encoding it cannot
 * frame, and throws RfbProtocolError on anything it cannot frame. Pure: no sockets.
 */
export class RfbFilter {
  private readonly session: Session;
  private readonly fromClient: ByteReader;
  private readonly fromServer: ByteReader;
  private readonly clientMessages: ClientMessageParser;
  private readonly serverMessages: ServerMessageParser;
  private failed: RfbProtocolError | undefined;

  constructor(opts: RfbFilterOptions) {
    this.session = new Session(
      {
        maxCutTextLength: opts.maxCutTextLength ?? DEFAULT_MAX_CUT_TEXT,
        maxStringLength: MAX_STRING,
        maxZlibLength: 64 * 1024 * 1024,
        maxEncodings: MAX_ENCODINGS,
        maxCursorSize: 1024,
      },
      opts.onFiltered?.bind(opts),
    );
    this.fromClient = new ByteReader((chunk) => opts.toServer(chunk), MAX_HEADER);
    this.fromServer = new ByteReader((chunk) => opts.toClient(chunk), MAX_HEADER);
    this.clientMessages = new ClientMessageParser(this.session);
    this.serverMessages = new ServerMessageParser(this.session);
  }

  /** 'server-version' ... 'server-init', then 'normal'; 'closed' after a failure or refusal. */
  get state(): string {
    return this.failed ? 'closed' : this.session.phase;
  }

  /**
   * Bytes of a message body (pixels, compressed data) the server has announced in a header
   * already forwarded but not sent yet: more of this message is certain to follow.
   */
  get serverBodyPending(): number {
    return this.session.phase === 'normal' ? this.serverMessages.bodyPending : 0;
  }

  pushFromClient(chunk: Buffer): void {
    this.push(chunk, this.fromClient, () => this.clientStep());
  }

  pushFromServer(chunk: Buffer): void {
    this.push(chunk, this.fromServer, () => this.serverStep());
  }

  private push(chunk: Buffer, r: ByteReader, step: () => boolean): void {
    if (this.failed) throw this.failed;
    try {
      r.begin(chunk);
      while (r.available > 0 && step());
      r.finish();
    } catch (err) {
      this.failed =
        err instanceof RfbProtocolError
          ? err
          : new RfbProtocolError(`internal filter error: ${String(err)}`);
      throw this.failed;
    }
  }

  private clientStep(): boolean {
    const s = this.session;
    if (s.clientInitDone) {
      this.clientMessages.run(this.fromClient);
      return false;
    }
    if (!isClientHandshakePhase(s.phase)) {
      throw new RfbProtocolError(`client sent data while waiting for the server (${s.phase})`);
    }
    return clientHandshakeStep(s, this.fromClient);
  }

  private serverStep(): boolean {
    const s = this.session;
    if (s.phase === 'normal') {
      this.serverMessages.run(this.fromServer);
      return false;
    }
    if (!isServerHandshakePhase(s.phase)) {
      throw new RfbProtocolError(`server sent data while waiting for the client (${s.phase})`);
    }
    return serverHandshakeStep(s, this.fromServer);
  }
}
