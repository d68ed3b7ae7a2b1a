/**
 * The project's data through trefs, mounted by the job agent on the node (outside the container,
 * as the job's user) and bound into the container at /data/<project>. trefs must reach the KMS
 * and FUSE cannot be mounted inside an unprivileged bubblewrap, so the KEK never enters the
 * container: it goes from the pickup straight to trefs through an inherited pipe (fd 3), never
 * argv, the environment or a file.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import type { Logger } from 'pino';
import { AgentError } from './errors.js';

/** Site settings for trefs (no secrets). */
export interface TrefsSettings {
  /** argv prefix that runs the trefs CLI, e.g. ["/opt/tre/bin/trefs"]; default ["trefs"]. */
  command?: string[];
  /**
   * Where projects' cipher directories live: `<cipherRoot>/<project>`, or, when it holds
   * `{project}`, this path with the project's name put in (the ingress's layout is
   * `<ingress root>/projects/{project}/cipher`, so sessions see what the ingress confirmed).
   */
  cipherRoot: string;
  /** The KMS base URL trefs asks for keys (or file:<path> for a local key service). */
  kmsUrl: string;
  /** Membership poll interval passed to trefs (--poll-ms). */
  pollMs?: number;
  mountTimeoutSeconds?: number;
}

/** What trefs's exit codes mean (trefs/README.md), for the message the user sees. */
const TREFS_EXIT: Record<number, string> = {
  2: 'usage error',
  3: 'the key was not handed over',
  4: 'the key does not open the project key',
  5: 'the key service is unreachable',
  6: 'not a member of the project, or the access window has closed',
  7: 'the project has no usable cipher directory',
  8: 'the filesystem could not be mounted',
};

const KEY_FD = 3;

/** The project's cipher directory under the site's `cipherRoot` (see {@link TrefsSettings}). */
export function cipherDirOf(s: Pick<TrefsSettings, 'cipherRoot'>, project: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(project)) {
    throw new AgentError('invalid project name');
  }
  return s.cipherRoot.includes('{project}')
    ? s.cipherRoot.split('{project}').join(project)
    : join(s.cipherRoot, project);
}

/** True when `path` is a mountpoint in this process's mount namespace. */
export function isMounted(path: string): boolean {
  const escaped = path.replace(
    /[ \t\n\\]/g,
    (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`,
  );
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((line) => line.split(' ')[4] === escaped);
}

/**
 * The key input trefs reads: the pickup's `{"kem", "privateKey"}` with the KMS token added,
 * built from buffers so the private key never becomes a JavaScript string here.
 */
export function keyInput(kek: Buffer, kmsToken: string | undefined): Buffer {
  let end = kek.length - 1;
  while (end >= 0 && kek[end] !== 0x7d) end--;
  if (end < 0) throw new AgentError('the key handed over is malformed');
  if (!kmsToken) return Buffer.from(kek);
  return Buffer.concat([
    kek.subarray(0, end),
    Buffer.from(`,"kmsToken":${JSON.stringify(kmsToken)}}`, 'utf8'),
  ]);
}

export class TrefsMount {
  private exited: Promise<number>;
  private stopped = false;

  private constructor(
    private readonly child: ChildProcess,
    readonly mountpoint: string,
    private readonly log: Logger,
  ) {
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
    });
  }

  /**
   * Starts `trefs mount`, hands it the key on fd 3 (the buffers are zeroed), and resolves once
   * it reports the mount usable. A refusal becomes an AgentError naming the reason.
   */
  static async start(o: {
    settings: TrefsSettings;
    project: string;
    cipherDir: string;
    mountpoint: string;
    kek: Buffer;
    kmsToken: string | undefined;
    /** trefs's key agent socket: in the run dir, so the container sees /run/tre/key-agent.sock. */
    keyAgentSocket?: string;
    log: Logger;
  }): Promise<TrefsMount> {
    const s = o.settings;
    const [cmd, ...pre] = s.command && s.command.length > 0 ? s.command : ['trefs'];
    const args = [
      ...pre,
      'mount',
      o.cipherDir,
      o.mountpoint,
      '--project',
      o.project,
      '--kms',
      s.kmsUrl,
      '--key-fd',
      String(KEY_FD),
      ...(s.pollMs ? ['--poll-ms', String(s.pollMs)] : []),
      ...(o.keyAgentSocket ? ['--key-agent', o.keyAgentSocket] : []),
    ];
    const child = spawn(cmd as string, args, {
      stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8' },
    });
    const m = new TrefsMount(child, o.mountpoint, o.log);
    let lastError = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      // trefs writes pino JSON lines and, on failure, one "trefs: <reason>" line; both go to the
      // job's log (neither carries key material).
      process.stderr.write(chunk);
      const text = chunk.toString('utf8');
      const found = /^trefs: (.+)$/m.exec(text);
      if (found) lastError = (found[1] as string).slice(0, 300);
    });
    const input = keyInput(o.kek, o.kmsToken);
    o.kek.fill(0);
    const pipe = child.stdio[KEY_FD] as Writable;
    pipe.on('error', () => undefined);
    pipe.end(input, () => input.fill(0));

    const timeoutMs = (s.mountTimeoutSeconds ?? 60) * 1000;
    const mounted = await new Promise<boolean>((resolve) => {
      let out = '';
      const timer = setTimeout(() => resolve(false), timeoutMs);
      child.stdout?.on('data', (chunk: Buffer) => {
        out += chunk.toString('utf8');
        if (/^trefs: mounted /m.test(out)) {
          clearTimeout(timer);
          resolve(true);
        }
      });
      child.once('exit', () => {
        clearTimeout(timer);
        resolve(false);
      });
      child.once('error', () => {
        clearTimeout(timer);
        resolve(false);
      });
    });
    input.fill(0);
    if (!mounted) {
      const code = child.exitCode;
      await m.unmount();
      const why =
        code !== null ? (TREFS_EXIT[code] ?? `trefs exited with code ${code}`) : 'timed out';
      throw new AgentError(
        `cannot mount the project's data (${why})${lastError ? `: ${lastError}` : ''}`,
      );
    }
    o.log.info({ event: 'trefs-mounted', mountpoint: o.mountpoint }, 'project data mounted');
    return m;
  }

  /** Calls `fn` when trefs exits (it should only at unmount). */
  onExit(fn: () => void): void {
    void this.exited.then(fn);
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /**
   * Unmounts: trefs unmounts itself on SIGTERM; if it does not exit in time it is killed and the
   * mount detached. Resolves true when nothing is left mounted. Safe to call twice.
   */
  async unmount(): Promise<boolean> {
    if (!this.stopped) {
      this.stopped = true;
      if (this.alive) this.child.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const exited = await Promise.race([
        this.exited.then(() => true),
        new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 10_000))),
      ]);
      clearTimeout(timer);
      if (!exited) {
        this.child.kill('SIGKILL');
        await this.exited;
      }
    }
    if (isMounted(this.mountpoint)) {
      // A killed daemon leaves a dead FUSE mount behind: detach it.
      await new Promise<void>((resolve) =>
        execFile('fusermount', ['-u', '-z', this.mountpoint], () => resolve()),
      );
    }
    const clean = !isMounted(this.mountpoint);
    if (!clean) {
      this.log.error(
        { event: 'trefs-unmount-failed', mountpoint: this.mountpoint },
        'the project data is still mounted',
      );
    } else {
      this.log.info({ event: 'trefs-unmounted', mountpoint: this.mountpoint }, 'unmounted');
    }
    return clean;
  }
}
