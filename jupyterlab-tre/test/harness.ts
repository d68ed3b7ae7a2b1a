/**
 * What the browser tests share: a real JupyterLab from the repository's .venv with
 * jupyterlab_tre installed, Debian's Chromium through playwright-core, and the TRE console.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';

export const ROOT = new URL('../..', import.meta.url).pathname;
export const PKG = new URL('..', import.meta.url).pathname;
export const JUPYTER = join(ROOT, '.venv', 'bin', 'jupyter');
export const ARTIFACTS = join(PKG, 'test-artifacts');
export const SHOTS = join(ARTIFACTS, 'screenshots');
export const HELPER = [process.execPath, join(PKG, 'helper', 'dist', 'cli.js')];

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

/** Waits for `fn` to return something other than undefined, retrying through errors. */
export async function until<T>(
  what: string,
  fn: () => Promise<T | undefined>,
  ms = 90_000,
  log: () => string = () => '',
): Promise<T> {
  const end = Date.now() + ms;
  let last: unknown;
  while (Date.now() < end) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(
    `timed out waiting for ${what}${last ? `: ${String(last)}` : ''}\n${log().slice(-3000)}`,
  );
}

export function requireLab(): void {
  if (!existsSync(JUPYTER)) {
    throw new Error(`${JUPYTER} is missing: run scripts/quickstart to create the .venv`);
  }
  if (!existsSync(join(PKG, 'jupyterlab_tre', 'labextension', 'package.json'))) {
    throw new Error('the labextension is not built: npm run build (with the .venv present)');
  }
}

export interface Lab {
  url: string;
  token: string;
  log(): string;
  stop(): Promise<void>;
}

/** `jupyter lab` on a free loopback port with `TreLab` settings, rooted at `rootDir`. */
export async function startLab(dir: string, rootDir: string, treLab: object): Promise<Lab> {
  const port = await freePort();
  const token = createHash('sha256').update(String(Math.random())).digest('hex');
  const env: NodeJS.ProcessEnv = {
    PATH: `${join(ROOT, '.venv', 'bin')}:${process.env.PATH}`,
    HOME: join(dir, 'home'),
    JUPYTER_CONFIG_DIR: join(dir, 'jupyter-config'),
    JUPYTER_RUNTIME_DIR: join(dir, 'jupyter-runtime'),
    JUPYTERLAB_SETTINGS_DIR: join(dir, 'lab-settings'),
    JUPYTERLAB_WORKSPACES_DIR: join(dir, 'lab-workspaces'),
  };
  mkdirSync(join(dir, 'home'), { recursive: true });
  const config = join(dir, 'jupyter_server_config.json');
  writeFileSync(config, JSON.stringify({ IdentityProvider: { token }, TreLab: treLab }));
  let log = '';
  const lab: ChildProcess = spawn(
    JUPYTER,
    [
      'lab',
      '--no-browser',
      '--allow-root',
      `--port=${port}`,
      '--ip=127.0.0.1',
      `--ServerApp.root_dir=${rootDir}`,
      `--config=${config}`,
    ],
    { env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  lab.stdout!.on('data', (d: Buffer) => (log += d.toString()));
  lab.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const url = `http://127.0.0.1:${port}`;
  const stop = async (): Promise<void> => {
    if (lab.exitCode !== null || lab.signalCode !== null) return;
    const exited = new Promise((r) => lab.once('exit', r));
    lab.kill('SIGTERM');
    const timer = setTimeout(() => lab.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  };
  try {
    await until(
      'jupyter lab to answer',
      async () => {
        const r = await fetch(`${url}/api/status`, {
          headers: { Authorization: `token ${token}` },
        });
        return r.ok ? true : undefined;
      },
      90_000,
      () => log,
    );
  } catch (e) {
    await stop();
    throw e;
  }
  return { url, token, log: () => log, stop };
}

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/** JupyterLab in a new browser context, once the sidebar's Projects panel has loaded. */
export async function labPage(browser: Browser, lab: Lab): Promise<Page> {
  // The lab's own token goes in a header, not in the address.
  const ctx = await browser.newContext({
    extraHTTPHeaders: { Authorization: `token ${lab.token}` },
    viewport: { width: 1400, height: 900 },
  });
  const page = await ctx.newPage();
  const messages: string[] = [];
  page.on('console', (m) => messages.push(`${m.type()}: ${m.text()}`));
  await page.goto(`${lab.url}/lab`);
  try {
    await page.waitForSelector('#tre-projects[data-loaded="true"]', {
      state: 'attached',
      timeout: 120_000,
    });
  } catch (e) {
    await page.screenshot({ path: join(SHOTS, 'lab-failed-to-load.png') });
    const status = await page
      .locator('#tre-projects .jp-tre-status')
      .textContent()
      .catch(() => '');
    throw new Error(
      `${String(e)}\npanel status: ${status}\nconsole:\n${messages.slice(-20).join('\n')}\nlab log:\n${lab.log().slice(-2000)}`,
    );
  }
  return page;
}

export async function openPanel(page: Page, id: string): Promise<void> {
  const tab = page.locator(`.jp-SideBar [data-id="${id}"]`);
  const panel = page.locator(`#${id}`);
  if (!(await panel.isVisible())) await tab.click();
  await panel.waitFor({ state: 'visible' });
}

/** The TRE console signed in with `token`. */
export async function consolePage(browser: Browser, kmsUrl: string, token: string): Promise<Page> {
  const ctx = await browser.newContext({ viewport: { width: 1300, height: 1000 } });
  // No hub here: the session comes from the API token, as an API client opens one (the sign-in
  // through the hub's OAuth is kms-service's hub test).
  const opened = await ctx.request.post(`${kmsUrl}/console/session`, {
    headers: { Authorization: `token ${token}` },
  });
  if (opened.status() !== 201) throw new Error(`console session: ${opened.status()}`);
  const page = await ctx.newPage();
  await page.goto(`${kmsUrl}/console/`);
  await page.waitForSelector('#view[data-loaded="true"]');
  return page;
}

export async function consoleTab(page: Page, tab: string): Promise<void> {
  await page.click(`nav button[data-tab="${tab}"]`);
  await page.waitForSelector(`#view[data-view="${tab}"][data-loaded="true"]`);
}
