import { afterAll, beforeAll, describe, expect, jest, test } from '@jest/globals';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { closed, mustOpen, openWs, waitFor } from './support/proxy.js';
import { startXvnc, type XvncSession } from './support/xvnc.js';

jest.setTimeout(30_000);

// The CLI as installed: the compiled entry point (`npm test` builds before running jest).
const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'cli.js');

function runCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('node', [CLI, ...args], { timeout: 15_000 }, (err, stdout, stderr) => {
      const code = err ? ((err as { code?: number }).code ?? 1) : 0;
      resolve({ code: typeof code === 'number' ? code : 1, stdout, stderr });
    });
  });
}

interface Running {
  child: ChildProcess;
  port: number;
  stdout: () => string;
  exit: Promise<number | null>;
}

async function startCli(args: string[]): Promise<Running> {
  const child = spawn('node', [CLI, '--listen', '127.0.0.1:0', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.resume();
  const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  let port = 0;
  await waitFor(() => {
    const line = out.split('\n').find((l) => l.includes('"event":"listening"'));
    if (line) port = (JSON.parse(line) as { port: number }).port;
    return port > 0 || child.exitCode !== null;
  }, 'the CLI to listen');
  if (!port) throw new Error(`CLI exited early: ${out}`);
  return { child, port, stdout: () => out, exit };
}

let xvnc: XvncSession;
let dir: string;
const children: ChildProcess[] = [];

beforeAll(async () => {
  xvnc = await startXvnc();
  dir = await mkdtemp(join(tmpdir(), 'dp-cli-'));
});
afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await xvnc?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('usage and exit codes', () => {
  test('--help documents the options and exit codes; --version prints the version', async () => {
    const help = await runCli(['--help']);
    expect(help.code).toBe(0);
    for (const word of ['--listen', '--target', '--auth', '--insecure-no-auth', 'Exit codes']) {
      expect(help.stdout).toContain(word);
    }
    const version = await runCli(['--version']);
    expect(version.code).toBe(0);
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  test('--insecure-no-auth on a non-loopback address refuses to start with exit code 2', async () => {
    for (const listen of ['0.0.0.0:0', '[::]:0']) {
      const r = await runCli(['--listen', listen, '--target', 'unix:/x', '--insecure-no-auth']);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain('REFUSING TO START');
    }
  });

  test('bad or missing options exit with code 2 and say why', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['--listen', '127.0.0.1:0'], /--listen and --target are required/],
      [['--listen', '127.0.0.1:0', '--target', 'unix:/x'], /choose --auth/],
      [['--listen', '127.0.0.1:0', '--target', 'unix:/x', '--auth', 'hub'], /--hub-api/],
      [['--listen', '127.0.0.1:0', '--target', 'nowhere', '--insecure-no-auth'], /HOST:PORT/],
      [['--listen', '127.0.0.1:0', '--target', 'unix:/x', '--auth', 'magic'], /choices/],
      [['--max-connections', '0'], /positive integer/],
    ];
    for (const [args, message] of cases) {
      const r = await runCli(args);
      expect([r.code, r.stderr]).toEqual([2, expect.stringMatching(message)]);
    }
  });

  test('a key file others can read is refused (exit 2)', async () => {
    const keyFile = join(dir, 'open.key');
    await writeFile(keyFile, Buffer.alloc(32, 3));
    await chmod(keyFile, 0o644);
    const r = await runCli([
      'ticket',
      '--ticket-key-file',
      keyFile,
      '--user',
      'a',
      '--session',
      's',
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('group or others');
  });
});

describe('running the proxy', () => {
  test('keygen and ticket subcommands issue what the ticket mode accepts', async () => {
    const keyFile = join(dir, 'ticket.key');
    expect((await runCli(['keygen', '--ticket-key-file', keyFile])).code).toBe(0);
    const issued = await runCli([
      'ticket',
      '--ticket-key-file',
      keyFile,
      '--user',
      'alice',
      '--session',
      'job-9',
    ]);
    expect(issued.code).toBe(0);
    const ticket = issued.stdout.trim();
    const other = await runCli([
      'ticket',
      '--ticket-key-file',
      keyFile,
      '--user',
      'alice',
      '--session',
      'job-8',
    ]);
    const proxy = await startCli([
      '--target',
      `unix:${xvnc.socketPath}`,
      '--auth',
      'ticket',
      '--user',
      'alice',
      '--session',
      'job-9',
      '--ticket-key-file',
      keyFile,
    ]);
    children.push(proxy.child);
    const url = `ws://127.0.0.1:${proxy.port}/websockify`;
    const ok = await mustOpen(`${url}?ticket=${ticket}`);
    expect((await ok.next()).toString('latin1')).toMatch(/^RFB/);
    ok.ws.close();
    await closed(ok.ws);
    expect(await openWs(`${url}?ticket=${other.stdout.trim()}`)).toMatchObject({ status: 401 });
    proxy.child.kill('SIGTERM');
    expect(await proxy.exit).toBe(0);
    expect(proxy.stdout()).toContain('"reason":"ticket-wrong-session"');
    expect(proxy.stdout()).not.toContain(ticket.split('.')[4]);
  });

  describe('hub mode (against an HTTP double of the hub API)', () => {
    let hub: Server;
    let hubApi: string;
    beforeAll(async () => {
      const tokens: Record<string, string> = { 'tok-alice-123': 'alice', 'tok-bob-456': 'bob' };
      hub = createServer((req, res) => {
        const name = tokens[/^token (.+)$/.exec(req.headers.authorization ?? '')?.[1] ?? ''];
        if (req.url !== '/hub/api/user' || !name) {
          res.writeHead(403).end('{}');
          return;
        }
        res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ name }));
      });
      await new Promise<void>((r) => hub.listen(0, '127.0.0.1', r));
      hubApi = `http://127.0.0.1:${(hub.address() as AddressInfo).port}/hub/api`;
    });
    afterAll(() => new Promise<void>((r) => hub.close(() => r())));

    test('only the owner gets in; refusals are logged with user and reason, never the token', async () => {
      const proxy = await startCli([
        '--target',
        `unix:${xvnc.socketPath}`,
        '--auth',
        'hub',
        '--hub-api',
        hubApi,
        '--user',
        'alice',
      ]);
      children.push(proxy.child);
      const url = `ws://127.0.0.1:${proxy.port}/websockify`;
      const alice = await mustOpen(url, ['binary'], {
        headers: { Authorization: 'token tok-alice-123' },
      });
      const viaCookie = await mustOpen(url, ['binary'], {
        headers: { Cookie: 'tre-desktop-token=tok-alice-123' },
      });
      for (const s of [alice, viaCookie]) s.ws.terminate();
      expect(await openWs(`${url}?token=tok-bob-456`)).toMatchObject({ status: 403 });
      expect(await openWs(`${url}?token=tok-forged`)).toMatchObject({ status: 401 });
      expect(await openWs(url)).toMatchObject({ status: 401 });
      proxy.child.kill('SIGINT');
      expect(await proxy.exit).toBe(0);
      const records = proxy
        .stdout()
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      const refused = records.filter((r) => r.event === 'refused');
      expect(refused.map((r) => [r.status, r.reason, r.user])).toEqual([
        [403, 'wrong-user', 'bob'],
        [401, 'invalid-token', null],
        [401, 'no-credentials', null],
      ]);
      expect(records.filter((r) => r.event === 'connect').map((r) => r.user)).toEqual([
        'alice',
        'alice',
      ]);
      for (const token of ['tok-alice-123', 'tok-bob-456', 'tok-forged']) {
        expect(proxy.stdout()).not.toContain(token);
      }
    });
  });
});
