import type { ByteReader } from './byte-reader.js';
import { RfbProtocolError } from './errors.js';
import { readPixelFormat } from './pixel-format.js';
import type { Phase, Session } from './session.js';

const SECURITY_NONE = 1;
const SECURITY_VNC_AUTH = 2;

const SERVER_PHASES = new Set<Phase>([
  'server-version',
  'security-types',
  'vnc-auth-challenge',
  'security-result',
  'security-failure-reason',
  'server-init',
]);

const CLIENT_PHASES = new Set<Phase>([
  'client-version',
  'security-choice',
  'vnc-auth-response',
  'client-init',
]);

export function isServerHandshakePhase(phase: Phase): boolean {
  return SERVER_PHASES.has(phase);
}

export function isClientHandshakePhase(phase: Phase): boolean {
  return CLIENT_PHASES.has(phase);
}

/** "RFB 003.008\n" -> 8; only the versions whose handshake the filter knows. */
function readVersion(buf: Buffer, off: number, who: string): number {
  const text = buf.toString('latin1', off, off + 12);
  const match = /^RFB 003\.00([378])\n$/.exec(text);
  if (!match) throw new RfbProtocolError(`unsupported ${who} protocol version`);
  return Number(match[1]);
}

function afterSecurityAccepted(s: Session): Phase {
  if (s.securityType === SECURITY_VNC_AUTH) return 'vnc-auth-challenge';
  // Version 3.8 sends a SecurityResult for None too; older versions go straight to ClientInit.
  return s.minorVersion >= 8 ? 'security-result' : 'client-init';
}

/** Parses one server handshake step. Returns false when it needs more bytes. */
export function serverHandshakeStep(s: Session, r: ByteReader): boolean {
  switch (s.phase) {
    case 'server-version':
      if (!r.need(12)) return false;
      s.serverMinorVersion = readVersion(r.h, r.ho, 'server');
      r.commit();
      s.phase = 'client-version';
      return true;

    case 'security-types':
      return s.minorVersion === 3 ? serverSecurityType33(s, r) : serverSecurityTypes(s, r);

    case 'vnc-auth-challenge':
      if (!r.need(16)) return false;
      r.commit();
      s.phase = 'vnc-auth-response';
      return true;

    case 'security-result': {
      if (!r.need(4)) return false;
      const result = r.h.readUInt32BE(r.ho);
      r.commit();
      if (result === 0) s.phase = 'client-init';
      else s.phase = s.minorVersion >= 8 ? 'security-failure-reason' : 'closed';
      return true;
    }

    case 'security-failure-reason': {
      if (!r.need(4)) return false;
      const length = r.h.readUInt32BE(r.ho);
      if (length > s.limits.maxStringLength) {
        throw new RfbProtocolError(`security failure reason of ${length} bytes is too long`);
      }
      if (!r.need(4 + length)) return false;
      r.commit();
      s.phase = 'closed';
      return true;
    }

    case 'server-init': {
      if (!r.need(24)) return false;
      const width = r.h.readUInt16BE(r.ho);
      const height = r.h.readUInt16BE(r.ho + 2);
      const pf = readPixelFormat(r.h, r.ho + 4);
      const nameLength = r.h.readUInt32BE(r.ho + 20);
      if (nameLength > s.limits.maxStringLength) {
        throw new RfbProtocolError(`desktop name of ${nameLength} bytes is too long`);
      }
      if (!r.need(24 + nameLength)) return false;
      r.commit();
      s.fbWidth = width;
      s.fbHeight = height;
      s.serverPixelFormat = pf;
      s.phase = 'normal';
      return true;
    }

    default:
      throw new RfbProtocolError(`server sent data while waiting for the client (${s.phase})`);
  }
}

function serverSecurityType33(s: Session, r: ByteReader): boolean {
  if (!r.need(4)) return false;
  const type = r.h.readUInt32BE(r.ho);
  if (type === 0) {
    r.commit();
    s.phase = 'security-failure-reason';
    return true;
  }
  if (type !== SECURITY_NONE && type !== SECURITY_VNC_AUTH) {
    throw new RfbProtocolError(`server chose security type ${type}, which the proxy cannot filter`);
  }
  r.commit();
  s.securityType = type;
  s.phase = afterSecurityAccepted(s);
  return true;
}

function serverSecurityTypes(s: Session, r: ByteReader): boolean {
  if (!r.need(1)) return false;
  const count = r.h[r.ho]!;
  if (count === 0) {
    r.commit();
    s.phase = 'security-failure-reason';
    return true;
  }
  if (!r.need(1 + count)) return false;
  const offered = [...r.h.subarray(r.ho + 1, r.ho + 1 + count)];
  // Encrypting types would make the rest of the stream opaque to the filter.
  const kept = offered.filter((t) => t === SECURITY_NONE || t === SECURITY_VNC_AUTH);
  if (kept.length === 0) {
    throw new RfbProtocolError(
      `server offers no security type the proxy can filter (${offered.join(',')})`,
    );
  }
  if (kept.length === count) {
    r.commit();
  } else {
    r.replace(Buffer.from([kept.length, ...kept]));
    s.filtered('server-to-client', 'security-types', count - kept.length);
  }
  s.offeredSecurityTypes = kept;
  s.phase = 'security-choice';
  return true;
}

/** Parses one client handshake step. Returns false when it needs more bytes. */
export function clientHandshakeStep(s: Session, r: ByteReader): boolean {
  switch (s.phase) {
    case 'client-version': {
      if (!r.need(12)) return false;
      const minor = readVersion(r.h, r.ho, 'client');
      if (minor > s.serverMinorVersion) {
        throw new RfbProtocolError('client chose a protocol version above the server');
      }
      r.commit();
      s.minorVersion = minor;
      s.phase = 'security-types';
      return true;
    }

    case 'security-choice': {
      if (!r.need(1)) return false;
      const type = r.h[r.ho]!;
      if (!s.offeredSecurityTypes.includes(type)) {
        throw new RfbProtocolError(`client chose security type ${type}, which was not offered`);
      }
      r.commit();
      s.securityType = type;
      s.phase = afterSecurityAccepted(s);
      return true;
    }

    case 'vnc-auth-response':
      if (!r.need(16)) return false;
      r.commit();
      s.phase = 'security-result';
      return true;

    case 'client-init':
      if (!r.need(1)) return false;
      r.commit();
      s.clientInitDone = true;
      s.phase = 'server-init';
      return true;

    default:
      throw new RfbProtocolError(`client sent data while waiting for the server (${s.phase})`);
  }
}
