import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { ENC, RfbTestClient } from './helpers/rfb-test-client.js';
import { startXvnc, type XvncSession } from './support/xvnc.js';

// What noVNC asks for, minus JPEG/H.264 (a real client would get them stripped anyway).
const PSEUDO = [
  ENC.Cursor,
  ENC.DesktopSize,
  ENC.LastRect,
  ENC.QEMUExtendedKeyEvent,
  ENC.DesktopName,
  ENC.Fence,
  ENC.ContinuousUpdates,
];

let x: XvncSession;
const clients: RfbTestClient[] = [];

async function connect(filter: boolean, encodings: number[]): Promise<RfbTestClient> {
  const c = await RfbTestClient.connect(x.socketPath, { filter });
  clients.push(c);
  c.setEncodings(encodings);
  await c.update(false);
  return c;
}

const marker = (what: string): string => `${what}-${randomBytes(6).toString('hex')}`;

/** Makes an X client own CLIPBOARD with `text` and waits until X serves it. */
async function setClipboard(text: string): Promise<void> {
  const owner = x.spawnClient('xclip', ['-quiet', '-selection', 'clipboard']);
  owner.stdin!.end(text);
  await waitUntil(async () => (await readClipboard()) === text, 'X clipboard to be set');
}

async function readClipboard(): Promise<string> {
  try {
    return await x.x('xclip', ['-o', '-selection', 'clipboard']);
  } catch {
    return '';
  }
}

async function waitUntil(
  cond: () => Promise<boolean>,
  what: string,
  timeoutMs = 8000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const hasText = (c: RfbTestClient, text: string): boolean =>
  c.cutTexts.some((t) => t.payload.includes(text));

beforeAll(async () => {
  x = await startXvnc({ geometry: '320x240' });
});

afterEach(() => {
  clients.splice(0).forEach((c) => c.close());
});

afterAll(async () => {
  await x?.stop();
});

describe('clipboard through the RFB filter against a real Xvnc with its clipboard on', () => {
  it('never delivers ServerCutText when the X clipboard changes (a direct client gets it)', async () => {
    const direct = await connect(false, [ENC.Raw]);
    const text1 = marker('server-plain');
    await setClipboard(text1);
    await direct.waitFor(
      () => hasText(direct, text1),
      8000,
      'ServerCutText on the direct connection',
    );

    const filtered = await connect(true, [ENC.Raw]);
    const text2 = marker('server-filtered');
    await setClipboard(text2);
    // The server did send it (the filter reports dropping it) ...
    await filtered.waitFor(
      () => filtered.filtered.some((e) => e.kind === 'server-cut-text'),
      8000,
      'the filter to drop ServerCutText',
    );
    await filtered.update(false);
    // ... and the client never saw any cut text.
    expect(filtered.cutTexts).toEqual([]);
    expect(hasText(direct, text2)).toBe(true);
  });

  it('drops a plain ClientCutText: the X clipboard stays unchanged (a direct client changes it)', async () => {
    const baseline = marker('baseline');
    await setClipboard(baseline);
    const filtered = await connect(true, [ENC.Raw]);
    const blocked = marker('client-plain-filtered');
    filtered.sendCutText(blocked);
    await filtered.update(false); // the server handles messages in order: the cut text would be in by now
    expect(filtered.filtered.map((e) => e.kind)).toContain('client-cut-text');
    expect(await readClipboard()).toBe(baseline);

    const direct = await connect(false, [ENC.Raw]);
    const passed = marker('client-plain-direct');
    direct.sendCutText(passed);
    await waitUntil(
      async () => (await readClipboard()) === passed,
      'the direct ClientCutText to reach X',
    );
  });

  it('drops Extended Clipboard both ways: no caps reach the client, its provide never reaches X', async () => {
    const baseline = marker('baseline');
    await setClipboard(baseline);
    const filtered = await connect(true, [ENC.Raw, ENC.ExtendedClipboard]);
    const blocked = marker('client-ext-filtered');
    filtered.clipboardText = blocked;
    filtered.notifyClipboard();
    filtered.provideClipboard(blocked);
    await filtered.update(false);
    expect(filtered.cutTexts).toEqual([]); // TigerVNC would have answered with its caps
    expect(filtered.filtered.filter((e) => e.kind === 'extended-clipboard')).toHaveLength(2);
    expect(filtered.filtered.map((e) => e.kind)).toContain('set-encodings-stripped');
    expect(await readClipboard()).toBe(baseline);

    const direct = await connect(false, [ENC.Raw, ENC.ExtendedClipboard]);
    await direct.waitFor(
      () => direct.cutTexts.some((t) => t.extended),
      8000,
      'Extended Clipboard caps',
    );
    const passed = marker('client-ext-direct');
    direct.clipboardText = passed;
    direct.notifyClipboard();
    await waitUntil(
      async () => (await readClipboard()) === passed,
      'the direct extended clipboard to reach X',
    );
  });
});

describe('framebuffer updates through the RFB filter against a real Xvnc', () => {
  const cases: [string, number, string][] = [
    ['Raw', ENC.Raw, '#c03010'],
    ['Hextile', ENC.Hextile, '#10c030'],
    ['ZRLE', ENC.ZRLE, '#3010c0'],
    ['Tight', ENC.Tight, '#c0c010'],
  ];

  /** Requests incremental updates until none arrives for a while (the screen has settled). */
  async function settle(c: RfbTestClient): Promise<number> {
    let updates = 0;
    for (;;) {
      try {
        await c.update(true, 1000);
        updates++;
      } catch (err) {
        if (c.filterError || !/timed out/.test((err as Error).message)) throw c.filterError ?? err;
        return updates;
      }
    }
  }

  it.each(cases)(
    '%s: incremental updates of a changing xterm decode to the server framebuffer',
    async (_name, enc, colour) => {
      await x.x('xsetroot', ['-solid', colour]);
      // Stripped encodings are asked for too: the server must never use them.
      const c = await connect(true, [
        enc,
        ...PSEUDO,
        ENC.JPEG,
        ENC.ExtendedDesktopSize,
        ENC.ExtendedMouseButtons,
      ]);
      await settle(c);
      const xterm = x.spawnClient('xterm', [
        '-geometry',
        '34x9+8+8',
        '-e',
        'sh',
        '-c',
        'i=0; while [ $i -lt 40 ]; do echo "line $i $(date +%N)"; i=$((i+1)); sleep 0.03; done; sleep 600',
      ]);
      try {
        expect(await settle(c)).toBeGreaterThan(2);
        expect(c.rectEncodings.has(enc)).toBe(true);
        for (const stripped of [ENC.JPEG, ENC.ExtendedDesktopSize, ENC.ExtendedMouseButtons]) {
          expect(c.rectEncodings.has(stripped)).toBe(false);
        }
        const reference = await connect(false, [ENC.Raw, ENC.Cursor]);
        await settle(reference);
        expect(Buffer.from(c.fb.buffer).equals(Buffer.from(reference.fb.buffer))).toBe(true);
        // The picture holds both the root colour and the xterm.
        expect(c.fb[c.fb.length - 1]).toBe(parseInt(colour.slice(1), 16));
        expect(new Set(c.fb).size).toBeGreaterThan(2);
        expect(c.filterError).toBeUndefined();
      } finally {
        const exited = new Promise((resolve) => xterm.once('exit', resolve));
        xterm.kill('SIGKILL');
        await exited;
        await waitUntil(
          async () => !(await x.x('xwininfo', ['-root', '-tree'])).includes('XTerm'),
          'xterm window gone',
        );
      }
    },
    30_000,
  );
});
