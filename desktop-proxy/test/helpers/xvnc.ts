// Starts a private Xvnc on a unix socket (clipboard switches left at their defaults: on) and
// runs X clients against it.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface Xvnc {
  display: string;
  socketPath: string;
  env: NodeJS.ProcessEnv;
  spawnX(cmd: string, args: string[]): ChildProcess;
  run(cmd: string, args: string[], input?: string): Promise<string>;
  stop(): Promise<void>;
}

function freeDisplay(): number {
  for (let n = 40 + Math.floor(Math.random() * 200); n < 1000; n++) {
    if (!fs.existsSync(`/tmp/.X${n}-lock`) && !fs.existsSync(`/tmp/.X11-unix/X${n}`)) return n;
  }
  throw new Error('no free X display number');
}

export async function startXvnc(geometry = '320x240'): Promise<Xvnc> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvnc-'));
  const socketPath = path.join(dir, 'vnc.sock');
  const n = freeDisplay();
  const display = `:${n}`;
  const children: ChildProcess[] = [];
  const xvnc = spawn(
    'Xvnc',
    [
      display,
      '-rfbunixpath',
      socketPath,
      '-rfbunixmode',
      '0600',
      '-rfbport',
      '-1',
      '-SecurityTypes',
      'None',
    ].concat(['-geometry', geometry, '-depth', '24']),
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  xvnc.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const env = { ...process.env, DISPLAY: display };
  const stop = async (): Promise<void> => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    if (xvnc.exitCode === null) {
      const exited = new Promise((resolve) => xvnc.once('exit', resolve));
      xvnc.kill('SIGTERM');
      await exited;
    }
    fs.rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 10_000;
  while (!fs.existsSync(socketPath)) {
    if (xvnc.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`Xvnc did not start: ${log}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    display,
    socketPath,
    env,
    spawnX(cmd, args) {
      const child = spawn(cmd, args, { env, stdio: ['pipe', 'ignore', 'ignore'] });
      children.push(child);
      return child;
    },
    run(cmd, args, input) {
      return new Promise((resolve, reject) => {
        const child = execFile(cmd, args, { env, timeout: 10_000 }, (err, stdout) =>
          err ? reject(err) : resolve(stdout),
        );
        if (input !== undefined) child.stdin!.end(input);
      });
    },
    stop,
  };
}
