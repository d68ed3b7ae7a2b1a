import { spawn } from 'node:child_process';
import { ExecutorError } from '../errors.js';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command without a shell, optionally feeding `input` on stdin, with a deadline. Output is
 * kept for error messages; callers pass nothing secret on the command line.
 */
export function runCommand(
  argv: readonly string[],
  options: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs: number },
): Promise<RunResult> {
  const [cmd, ...args] = argv;
  if (!cmd) return Promise.reject(new ExecutorError('empty command'));
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      env: options.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, options.timeoutMs);
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.stdin.on('error', () => {
      // The command may exit without reading its input; its exit status tells what happened.
    });
    child.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new ExecutorError(`cannot run ${cmd}: ${e.code ?? e.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (timedOut) {
        reject(new ExecutorError(`${cmd} did not answer within ${options.timeoutMs} ms`));
        return;
      }
      resolve({
        code: code ?? (signal ? 128 : 1),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      });
    });
    child.stdin.end(options.input ?? '');
  });
}

/** The first lines of a command's error output, for messages. */
export function firstLines(text: string, lines = 3): string {
  return text.trim().split('\n').slice(0, lines).join(' | ').slice(0, 500);
}
