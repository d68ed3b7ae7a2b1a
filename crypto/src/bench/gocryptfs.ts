/**
 * Runs the real gocryptfs for interop tests and the benchmark: a mount in per-file-key mode
 * (`-masterkey=stdin -plaintextnames`, no gocryptfs.conf, so gocryptfs assumes its v2
 * defaults). The key goes to gocryptfs on stdin as hex, never in argv or the environment.
 * gocryptfs runs in the foreground as our child, so we can always stop it.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';

const MOUNT_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 10_000;

/** Unmounts a FUSE mount with whichever fusermount the system has; false if neither worked. */
export function fuseUnmount(mountpoint: string): boolean {
  for (const cmd of ['fusermount3', 'fusermount']) {
    if (spawnSync(cmd, ['-u', mountpoint], { stdio: 'ignore' }).status === 0) return true;
  }
  return false;
}

let ticks: number | undefined;
function clockTicks(): number {
  ticks ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
  return ticks;
}

export class GocryptfsMount {
  private readonly exited: Promise<number | null>;

  private constructor(
    readonly mountpoint: string,
    private readonly proc: ChildProcess,
  ) {
    this.exited = new Promise((resolve) => {
      proc.once('exit', (code) => resolve(code));
      proc.once('error', () => resolve(null));
    });
  }

  /** Mounts `cipherDir` on `mountpoint` with master key `key` (32 bytes). */
  static async start(
    cipherDir: string,
    mountpoint: string,
    key: Uint8Array,
  ): Promise<GocryptfsMount> {
    const proc = spawn(
      'gocryptfs',
      ['-fg', '-masterkey=stdin', '-plaintextnames', cipherDir, mountpoint],
      {
        stdio: ['pipe', 'pipe', 'pipe'],
      },
    );
    const mount = new GocryptfsMount(mountpoint, proc);
    let output = '';
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () =>
            reject(new Error(`gocryptfs did not mount within ${MOUNT_TIMEOUT_MS} ms: ${output}`)),
          MOUNT_TIMEOUT_MS,
        );
        const onData = (d: Buffer): void => {
          output += d.toString();
          if (output.includes('Filesystem mounted and ready')) {
            clearTimeout(timer);
            resolve();
          }
        };
        proc.stdout?.on('data', onData);
        proc.stderr?.on('data', onData);
        proc.once('exit', (code) => {
          clearTimeout(timer);
          reject(new Error(`gocryptfs exited with ${code} before mounting: ${output.trim()}`));
        });
        proc.once('error', (err) => {
          clearTimeout(timer);
          reject(err);
        });
        proc.stdin?.end(`${Buffer.from(key).toString('hex')}\n`);
      });
    } catch (err) {
      await mount.stop();
      throw err;
    }
    return mount;
  }

  /** CPU seconds (user + system, all threads) gocryptfs has used so far, from /proc. */
  cpuSeconds(): number {
    const stat = readFileSync(`/proc/${this.proc.pid}/stat`, 'utf8');
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / clockTicks();
  }

  /** Unmounts and waits for gocryptfs to exit; kills it if it will not. Safe to call twice. */
  async stop(): Promise<void> {
    if (
      this.proc.exitCode === null &&
      this.proc.signalCode === null &&
      !fuseUnmount(this.mountpoint)
    ) {
      this.proc.kill('SIGTERM');
    }
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), STOP_TIMEOUT_MS);
    });
    if ((await Promise.race([this.exited, timeout])) === 'timeout') {
      this.proc.kill('SIGKILL');
      await this.exited;
    }
    clearTimeout(timer);
    // A killed gocryptfs can leave a dead mount ("transport endpoint is not connected").
    fuseUnmount(this.mountpoint);
  }
}
