/**
 * Who is calling: fuse-native does not pass the FUSE request context (pid) to JavaScript, so
 * trefs finds the caller the way an administrator would. While trefs handles an open, create,
 * rename or unlink, the calling thread is blocked inside that system call, and
 * /proc/<tid>/syscall shows the call and its arguments. A thread qualifies when it is blocked
 * in a path-taking call whose path argument (read from /proc/<tid>/mem) ends in the name being
 * handled. Threads that matched recently are checked first, so a busy process costs a few
 * reads per operation; a full scan of /proc happens only on a miss, and stops after
 * `budgetMs` (default 100 ms) so a busy machine never slows file operations down much: such an
 * event is recorded without a pid.
 *
 * Linux x86-64 only; elsewhere, or when /proc is not readable, events carry no pid.
 */
import { closeSync, openSync, readFileSync, readSync, readlinkSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { posix } from 'node:path';

/** x86-64 syscall numbers of path-taking calls trefs audits, with their path argument indices. */
const PATH_ARGS = new Map<number, number[]>([
  [2, [0]], // open
  [85, [0]], // creat
  [257, [1]], // openat
  [437, [1]], // openat2
  [82, [0, 1]], // rename
  [264, [1, 3]], // renameat
  [316, [1, 3]], // renameat2
  [87, [0]], // unlink
  [263, [1]], // unlinkat
]);

const RECENT = 8;
const BATCH = 16;
const PATH_READ = 4096;

export interface CallerInfo {
  pid: number;
  exe?: string;
}

/*
 * The /proc reads below are synchronous on purpose: each is a few microseconds of kernel work
 * on generated files, while a round trip through libuv's thread pool costs tens to hundreds of
 * microseconds on a busy machine and sat on the path of every audited operation.
 */
const pathBuf = Buffer.alloc(PATH_READ);

function readPathArg(tid: number, addr: bigint): string | undefined {
  let fd: number | undefined;
  try {
    fd = openSync(`/proc/${tid}/mem`, 'r');
    const bytesRead = readSync(fd, pathBuf, 0, PATH_READ, addr);
    const end = pathBuf.subarray(0, bytesRead).indexOf(0);
    return pathBuf.toString('utf8', 0, end < 0 ? bytesRead : end);
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** 'match', 'candidate' (right call, path unreadable) or 'no'. */
function check(tid: number, base: string): 'match' | 'candidate' | 'no' {
  let text: string;
  try {
    text = readFileSync(`/proc/${tid}/syscall`, 'latin1');
  } catch {
    return 'no';
  }
  const parts = text.trim().split(' ');
  const indices = PATH_ARGS.get(Number(parts[0]));
  if (indices === undefined) return 'no';
  let unreadable = false;
  for (const i of indices) {
    const arg = parts[i + 1];
    if (arg === undefined) continue;
    const path = readPathArg(tid, BigInt(arg));
    if (path === undefined) unreadable = true;
    else if (posix.basename(path) === base) return 'match';
  }
  return unreadable ? 'candidate' : 'no';
}

export class CallerResolver {
  private readonly recent: number[] = [];
  readonly supported = process.platform === 'linux' && process.arch === 'x64';

  constructor(private readonly budgetMs = 100) {}

  /** The process blocked in a call on `plainPath` (basename compared), if it can be found. */
  async resolve(plainPath: string): Promise<CallerInfo | undefined> {
    if (!this.supported) return undefined;
    const base = posix.basename(plainPath);
    for (const tid of this.recent) {
      if (check(tid, base) === 'match') return this.info(tid);
    }
    const candidates: number[] = [];
    const deadline = Date.now() + this.budgetMs;
    let procs: string[];
    try {
      procs = await readdir('/proc');
    } catch {
      return undefined;
    }
    // Newest processes first: the caller is most often a freshly started command.
    procs = procs.filter((p) => /^\d+$/.test(p) && Number(p) !== process.pid);
    procs.sort((a, b) => Number(b) - Number(a));
    // Checked in small parallel batches: each check is a few /proc reads.
    for (let i = 0; i < procs.length; i += BATCH) {
      if (Date.now() > deadline) return undefined;
      const found = await Promise.all(
        procs.slice(i, i + BATCH).map((p) => this.scanProcess(p, base)),
      );
      for (const res of found) {
        if (res?.kind === 'match') {
          this.remember(res.tid);
          return this.info(res.tid);
        }
        if (res?.kind === 'candidate') candidates.push(res.tid);
      }
    }
    return candidates.length === 1 ? this.info(candidates[0]!) : undefined;
  }

  private async scanProcess(
    pid: string,
    base: string,
  ): Promise<{ kind: 'match' | 'candidate'; tid: number } | undefined> {
    let tasks: string[];
    try {
      tasks = await readdir(`/proc/${pid}/task`);
    } catch {
      return undefined;
    }
    let candidate: number | undefined;
    for (const t of tasks) {
      const res = check(Number(t), base);
      if (res === 'match') return { kind: 'match', tid: Number(t) };
      if (res === 'candidate') candidate = Number(t);
    }
    return candidate === undefined ? undefined : { kind: 'candidate', tid: candidate };
  }

  private remember(tid: number): void {
    const i = this.recent.indexOf(tid);
    if (i >= 0) this.recent.splice(i, 1);
    this.recent.unshift(tid);
    if (this.recent.length > RECENT) this.recent.pop();
  }

  private info(tid: number): CallerInfo {
    let pid = tid;
    try {
      const status = readFileSync(`/proc/${tid}/status`, 'latin1');
      const m = /^Tgid:\s+(\d+)/m.exec(status);
      if (m) pid = Number(m[1]);
    } catch {
      return { pid };
    }
    try {
      return { pid, exe: readlinkSync(`/proc/${pid}/exe`) };
    } catch {
      return { pid };
    }
  }
}
