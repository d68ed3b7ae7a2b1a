/** RFB encoding numbers (signed 32-bit, as on the wire). */
export const Encoding = {
  Raw: 0,
  CopyRect: 1,
  RRE: 2,
  Hextile: 5,
  Zlib: 6,
  Tight: 7,
  ZRLE: 16,
  JPEG: 21,
  H264: 50,
  TightPNG: -260,
  DesktopSize: -223,
  LastRect: -224,
  Cursor: -239,
  QEMUExtendedKeyEvent: -258,
  QEMULedEvent: -261,
  DesktopName: -307,
  ExtendedDesktopSize: -308,
  Xvp: -309,
  Fence: -312,
  ContinuousUpdates: -313,
  ExtendedMouseButtons: -316,
  VMwareCursor: 0x574d5664,
  ExtendedClipboard: 0xc0a1e5ce | 0,
} as const;

const QUALITY_LEVEL_0 = -32;
const QUALITY_LEVEL_9 = -23;
const COMPRESS_LEVEL_0 = -256;
const COMPRESS_LEVEL_9 = -247;

/**
 * The encodings a client may ask the server for: exactly those whose server messages the
 * filter frames. Everything else is removed from SetEncodings, notably
 * - Extended Clipboard, the clipboard itself;
 * - JPEG and H.264, whose rectangles carry no length the filter could follow;
 * - ExtendedMouseButtons, which changes the size of PointerEvent;
 * - ExtendedDesktopSize, because TigerVNC misframes a SetDesktopSize message that arrives in
 *   pieces (it ends the message early and parses its remainder as new messages, which would
 *   let a client hide a ClientCutText inside the screen layout). Without it clients never
 *   send SetDesktopSize; server-side resizes still arrive through DesktopSize.
 */
const ALLOWED = new Set<number>([
  Encoding.Raw,
  Encoding.CopyRect,
  Encoding.RRE,
  Encoding.Hextile,
  Encoding.Tight,
  Encoding.ZRLE,
  Encoding.TightPNG,
  Encoding.DesktopSize,
  Encoding.LastRect,
  Encoding.Cursor,
  Encoding.QEMUExtendedKeyEvent,
  Encoding.QEMULedEvent,
  Encoding.DesktopName,
  Encoding.Fence,
  Encoding.ContinuousUpdates,
]);

export function isAllowedEncoding(encoding: number): boolean {
  return (
    ALLOWED.has(encoding) ||
    (encoding >= QUALITY_LEVEL_0 && encoding <= QUALITY_LEVEL_9) ||
    (encoding >= COMPRESS_LEVEL_0 && encoding <= COMPRESS_LEVEL_9)
  );
}
