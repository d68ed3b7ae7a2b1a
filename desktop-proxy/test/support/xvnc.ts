import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { waitFor } from './wait.js';

const run = promisify(execFile);

export interface XvncSession {
  display: string;
  dir: string;
  socketPath: string;
  env: NodeJS.ProcessEnv;
  /** Runs an X client in the session (stdin is a pipe); it is killed by stop(). */
  spawnClient(command: string, args: string[]): ChildProcess;
  /** Runs an X command to completion, optionally feeding it `input`; resolves to its stdout. */
  x(command: string, args: string[], input?: string): Promise<string>;
  stop(): Promise<void>;
}

function freeDisplay(): number {
  for (;;) {
    const n = 100 + Math.floor(Math.random() * 800);
    if (!existsSync(`/tmp/.X${n}-lock`) && !existsSync(`/tmp/.X11-unix/X${n}`)) return n;
  }
}

/**
 * Starts a real Xvnc listening only on a unix socket in a private 0700 directory. With
 * `clipboardOff: false` TigerVNC's own clipboard switches stay on, so whatever stops clipboard
 * traffic in a test is the proxy alone.
 */
export async function startXvnc(
  options: { clipboardOff?: boolean; geometry?: string } = {},
): Promise<XvncSession> {
  const dir = await mkdtemp(join(tmpdir(), 'dp-xvnc-'));
  const socketPath = join(dir, 'vnc.sock');
  const clipboardArgs = options.clipboardOff
    ? ['-AcceptCutText=0', '-SendCutText=0', '-SendPrimary=0', '-SetPrimary=0', '-noclipboard']
    : [];
  let xvnc: ChildProcess | undefined;
  let display = '';
  for (let attempt = 0; attempt < 5 && !xvnc; attempt++) {
    display = `:${freeDisplay()}`;
    const child = spawn(
      'Xvnc',
      [
        display,
        '-SecurityTypes',
        'None',
        '-rfbunixpath',
        socketPath,
        '-rfbunixmode',
        '0600',
        '-rfbport',
        '-1',
        '-nolisten',
        'tcp',
        '-AllowOverride=desktop',
        // Tests send malformed handshakes on purpose; all unix-socket clients share one
        // blacklist entry, so TigerVNC would otherwise lock every later test out.
        '-BlacklistThreshold=1000000',
        '-geometry',
        options.geometry ?? '1024x768',
        '-depth',
        '24',
        ...clipboardArgs,
      ],
      { stdio: 'ignore' },
    );
    let exited = false;
    child.once('exit', () => (exited = true));
    try {
      await waitFor(() => exited || existsSync(socketPath), 'Xvnc socket');
    } catch {
      child.kill('SIGKILL');
    }
    if (!exited && existsSync(socketPath)) xvnc = child;
  }
  if (!xvnc) {
    await rm(dir, { recursive: true, force: true });
    throw new Error('Xvnc did not start');
  }
  const server = xvnc;
  const env = { ...process.env, DISPLAY: display };
  const clients: ChildProcess[] = [];
  await waitFor(
    () =>
      run('xdpyinfo', [], { env }).then(
        () => true,
        () => false,
      ),
    'X display',
  );
  return {
    display,
    dir,
    socketPath,
    env,
    spawnClient(command, args) {
      const child = spawn(command, args, { env, stdio: ['pipe', 'ignore', 'ignore'] });
      clients.push(child);
      return child;
    },
    x(command, args, input) {
      return new Promise((resolve, reject) => {
        const child = execFile(command, args, { env, timeout: 10_000 }, (err, stdout) =>
          err ? reject(err) : resolve(stdout),
        );
        if (input !== undefined) child.stdin?.end(input);
      });
    },
    async stop() {
      for (const c of clients) c.kill('SIGKILL');
      if (server.exitCode === null && server.signalCode === null) {
        const gone = new Promise((r) => server.once('exit', r));
        server.kill('SIGTERM');
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([gone, new Promise((r) => (timer = setTimeout(r, 3000)))]);
        clearTimeout(timer);
        server.kill('SIGKILL');
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export async function socketMode(path: string): Promise<number> {
  return (await stat(path)).mode & 0o777;
}
