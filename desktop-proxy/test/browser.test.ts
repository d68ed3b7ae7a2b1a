/// <reference lib="dom" />
import { afterAll, beforeAll, describe, expect, jest, test } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { PNG } from 'pngjs';
import { issueTicket, ticketAuthenticator } from '../src/auth.js';
import { createDesktopProxy, type DesktopProxy } from '../src/server.js';
import { capturingLogger, waitFor } from './support/proxy.js';
import { startXvnc, type XvncSession } from './support/xvnc.js';

jest.setTimeout(60_000);

const key = Buffer.alloc(32, 9);
const SESSION = 'desk-1';
const ticket = (k = key) => issueTicket(k, { user: 'alice', session: SESSION, ttlSeconds: 600 });

let xvnc: XvncSession;
let browser: Browser;
let websockify: ChildProcess | undefined;
let websockifyPort = 0;
const proxies: DesktopProxy[] = [];

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

async function startProxy(options: { idleTimeoutSeconds?: number; port?: number } = {}) {
  const logs = capturingLogger();
  const proxy = createDesktopProxy({
    target: `unix:${xvnc.socketPath}`,
    auth: ticketAuthenticator({ key, user: 'alice', session: SESSION }),
    logger: logs.logger,
    idleTimeoutSeconds: options.idleTimeoutSeconds ?? 0,
  });
  proxies.push(proxy);
  const { port } = await proxy.listen(options.port ?? 0, '127.0.0.1');
  return { proxy, logs, url: `http://127.0.0.1:${port}`, port };
}

async function openDesktop(url: string): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1024, height: 768 } });
  const page = await context.newPage();
  await page.goto(url);
  return page;
}

const state = (page: Page) => page.evaluate(() => document.body.dataset.state ?? '');

async function waitForState(page: Page, wanted: string, ms = 20_000) {
  await page.waitForFunction((s) => document.body.dataset.state === s, wanted, { timeout: ms });
}

async function pixelAt(page: Page, x: number, y: number): Promise<[number, number, number]> {
  const png = PNG.sync.read(await page.screenshot());
  const i = (png.width * y + x) * 4;
  return [png.data[i] as number, png.data[i + 1] as number, png.data[i + 2] as number];
}

const clipboardInside = (selection: 'clipboard' | 'primary') =>
  xvnc.x('xclip', ['-o', '-selection', selection]).catch(() => '');

function setClipboardInside(text: string): Promise<void> {
  // xclip forks and serves the selection until someone else owns it or the X server exits.
  return new Promise((resolve, reject) => {
    const child = spawn('xclip', ['-selection', 'clipboard', '-i'], {
      env: xvnc.env,
      stdio: ['pipe', 'ignore', 'ignore'],
    });
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`xclip ${code}`))));
    child.stdin.end(text);
  });
}

beforeAll(async () => {
  // TigerVNC's own clipboard switches stay ON: only the proxy stands between browser and X.
  xvnc = await startXvnc({ clipboardOff: false });
  await xvnc.x('xsetroot', ['-solid', '#00ff7f']);
  xvnc.spawnClient('xterm', ['-geometry', '80x10+0+0', '-bg', 'black', '-fg', 'white']);
  await waitFor(
    async () => (await xvnc.x('xwininfo', ['-root', '-children'])).includes('xterm'),
    'xterm window',
  );
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
});

afterAll(async () => {
  await Promise.all(proxies.map((p) => p.close()));
  await browser?.close();
  if (websockify?.pid && websockify.exitCode === null) {
    process.kill(-websockify.pid, 'SIGKILL');
  }
  await xvnc?.stop();
});

describe('the desktop page in Chromium, through the proxy, against a real Xvnc', () => {
  let page: Page;
  let proxyUrl: string;
  let proxyLogs: ReturnType<typeof capturingLogger>;

  test('connects with a ticket, hides it from the address bar and shows the desktop', async () => {
    const { url, logs } = await startProxy();
    proxyUrl = url;
    proxyLogs = logs;
    page = await openDesktop(`${url}/?ticket=${ticket()}`);
    await waitForState(page, 'connected');
    expect(page.url()).toBe(`${url}/`);
    // The root window's colour outside the xterm, and the xterm's black inside it.
    await waitFor(async () => {
      const [r, g, b] = await pixelAt(page, 900, 700);
      return r < 10 && g > 245 && b > 117 && b < 137;
    }, 'root window colour on screen');
    const [r, g, b] = await pixelAt(page, 300, 120);
    expect(r + g + b).toBeLessThan(30);
  });

  test('keystrokes reach an xterm inside the session', async () => {
    const target = join(xvnc.dir, 'typed.txt');
    await page.mouse.click(200, 60);
    await page.keyboard.type(`echo typed-through-novnc > ${target}\n`, { delay: 20 });
    await waitFor(() => existsSync(target), 'file written by the typed command');
    expect((await readFile(target, 'utf8')).trim()).toBe('typed-through-novnc');
  });

  test("the browser's clipboard and noVNC's paste reach nothing inside, and nothing comes out", async () => {
    await setClipboardInside('inside-before');
    // The page's Permissions-Policy takes the async clipboard away from every script on it.
    const api = await page.evaluate(async () => {
      const results: string[] = [];
      for (const attempt of [
        () => navigator.clipboard.writeText('browser-secret'),
        () => navigator.clipboard.readText(),
      ]) {
        try {
          await attempt();
          results.push('allowed');
        } catch (err) {
          results.push((err as Error).name);
        }
      }
      return results;
    });
    expect(api).toEqual(['NotAllowedError', 'NotAllowedError']);

    // A paste event and Ctrl+V on the desktop.
    await page.evaluate(() => {
      const data = new DataTransfer();
      data.setData('text/plain', 'browser-secret');
      const canvas = document.querySelector('#screen canvas') ?? document.body;
      canvas.dispatchEvent(new ClipboardEvent('paste', { clipboardData: data, bubbles: true }));
    });
    await page.keyboard.press('Control+V');

    // The strongest attempt: noVNC's own paste API (what its clipboard panel calls), on a second
    // connection through the proxy, while the X clipboard changes inside.
    const probe = await page.evaluate(
      async ({ wsUrl, modulePath }) => {
        const { default: RFB } = await import(modulePath);
        const div = document.createElement('div');
        document.body.append(div);
        const rfb = new RFB(div, wsUrl, { shared: true });
        const received: string[] = [];
        rfb.addEventListener('clipboard', (e: CustomEvent<{ text: string }>) =>
          received.push(e.detail.text),
        );
        await new Promise<void>((resolve) => rfb.addEventListener('connect', () => resolve()));
        rfb.clipboardPasteFrom('browser-secret');
        (window as unknown as { probe: { rfb: unknown; received: string[] } }).probe = {
          rfb,
          received,
        };
        return 'connected';
      },
      {
        wsUrl: `${proxyUrl.replace('http:', 'ws:')}/websockify?ticket=${ticket()}`,
        modulePath: './novnc/core/rfb.js',
      },
    );
    expect(probe).toBe('connected');
    await new Promise((r) => setTimeout(r, 500));
    await setClipboardInside('inside-after');
    await new Promise((r) => setTimeout(r, 1500));
    const received = await page.evaluate(
      () => (window as unknown as { probe: { received: string[] } }).probe.received,
    );
    expect(received).toEqual([]);
    expect(await clipboardInside('clipboard')).toBe('inside-after');
    expect(await clipboardInside('primary')).not.toContain('browser-secret');
    // Both directions were really attempted and dropped by the filter, not merely never sent.
    const filtered = proxyLogs.records().filter((r) => r.event === 'filtered');
    expect(filtered).toContainEqual(
      expect.objectContaining({ direction: 'client-to-server', kind: 'client-cut-text' }),
    );
    expect(filtered).toContainEqual(
      expect.objectContaining({ direction: 'server-to-client', kind: 'server-cut-text' }),
    );
  });

  test('control: without the proxy (websockify) the same paste and copy do leak', async () => {
    websockifyPort = await freePort();
    const novncRoot = dirname(dirname(createRequire(import.meta.url).resolve('@novnc/novnc')));
    websockify = spawn(
      'websockify',
      ['--web', novncRoot, `127.0.0.1:${websockifyPort}`, `--unix-target=${xvnc.socketPath}`],
      // Its own process group: websockify forks a child per connection, and a child that
      // outlives the parent keeps this process's keep-alive socket open.
      { stdio: 'ignore', detached: true },
    );
    await waitFor(
      () =>
        fetch(`http://127.0.0.1:${websockifyPort}/core/rfb.js`).then(
          (r) => r.ok,
          () => false,
        ),
      'websockify',
    );
    const control = await browser.newPage();
    await control.goto(`http://127.0.0.1:${websockifyPort}/package.json`);
    await control.evaluate(
      async ({ wsUrl, modulePath }) => {
        const { default: RFB } = await import(modulePath);
        const div = document.createElement('div');
        document.body.append(div);
        const rfb = new RFB(div, wsUrl, { shared: true });
        const texts: string[] = [];
        rfb.addEventListener('clipboard', (e: CustomEvent<{ text: string }>) =>
          texts.push(e.detail.text),
        );
        (window as unknown as { texts: string[] }).texts = texts;
        await new Promise<void>((resolve) => rfb.addEventListener('connect', () => resolve()));
        rfb.clipboardPasteFrom('leaked-without-proxy');
      },
      { wsUrl: `ws://127.0.0.1:${websockifyPort}/websockify`, modulePath: '/core/rfb.js' },
    );
    await waitFor(
      async () => (await clipboardInside('clipboard')) === 'leaked-without-proxy',
      'the unfiltered paste to reach the X clipboard',
    );
    await setClipboardInside('copied-out-without-proxy');
    await control.waitForFunction(
      () => (window as unknown as { texts: string[] }).texts.includes('copied-out-without-proxy'),
      null,
      { timeout: 10_000 },
    );
    await control.close();
  });
});

describe('what the page says', () => {
  test('a refused ticket shows a refusal and no reconnect loop', async () => {
    const { url, logs } = await startProxy();
    const page = await openDesktop(`${url}/?ticket=${ticket(Buffer.alloc(32, 1))}`);
    await waitForState(page, 'refused');
    expect(await page.textContent('#message')).toContain(
      'Access to this desktop was refused (ticket-bad-signature)',
    );
    await new Promise((r) => setTimeout(r, 1500));
    expect(await state(page)).toBe('refused');
    expect(logs.records().filter((r) => r.event === 'refused')).toHaveLength(1);
    expect(logs.records().some((r) => r.event === 'connect')).toBe(false);
    await page.context().close();
  });

  test('an idle session ends with a message', async () => {
    const { url } = await startProxy({ idleTimeoutSeconds: 2 });
    const page = await openDesktop(`${url}/?ticket=${ticket()}`);
    await waitForState(page, 'connected');
    await waitForState(page, 'ended', 15_000);
    expect(await page.textContent('#message')).toContain('inactivity');
    await page.context().close();
  });

  test('after the proxy restarts the page reconnects on its own', async () => {
    const first = await startProxy();
    const page = await openDesktop(`${first.url}/?ticket=${ticket()}`);
    await waitForState(page, 'connected');
    await first.proxy.close();
    await waitForState(page, 'reconnecting');
    expect(await page.textContent('#message')).toMatch(/Reconnecting in \d+ s/);
    await startProxy({ port: first.port });
    await waitForState(page, 'connected', 30_000);
    await page.context().close();
  });

  test('when the desktop itself goes away the page says the session has ended', async () => {
    const { url } = await startProxy();
    const page = await openDesktop(`${url}/?ticket=${ticket()}`);
    await waitForState(page, 'connected');
    await xvnc.stop();
    await waitForState(page, 'ended');
    expect(await page.textContent('#message')).toBe('The desktop session has ended.');
    await page.context().close();
  });
});
