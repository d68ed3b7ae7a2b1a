/**
 * The pid file and the stopping of a previous run's leftovers, with real processes: a recorded
 * process is stopped only while its pid, command line and start time all match; anything else
 * (a reused pid, a changed command line) is left alone.
 */
import { afterAll, describe, expect, test } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { identify, PidFile, stillRunning, stopRecorded, type Recorded } from '../src/supervisor.js';

const dir = mkdtempSync(join(tmpdir(), 'tre-demo-sup-'));
const started: ChildProcess[] = [];

afterAll(() => {
  for (const c of started) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

/** A detached `sleep`, its own process group like the demo's children. */
async function sleeper(): Promise<{ child: ChildProcess; rec: Recorded }> {
  const child = spawn('sleep', ['300'], { detached: true, stdio: 'ignore' });
  started.push(child);
  await new Promise((r) => child.once('spawn', r));
  const rec = identify('sleeper', child.pid as number);
  if (!rec) throw new Error('sleep is gone');
  return { child, rec };
}

const gone = (c: ChildProcess) =>
  new Promise<void>((r) =>
    c.exitCode !== null || c.signalCode !== null ? r() : c.once('exit', () => r()),
  );

describe('stopping what a previous run left', () => {
  test('a recorded process that still matches is stopped, with its group', async () => {
    const { child, rec } = await sleeper();
    expect(rec).toMatchObject({ cmdline: ['sleep', '300'].join('\0'), group: true });
    expect(stillRunning(rec)).toBe(true);
    expect(await stopRecorded(rec, 5_000)).toBe(true);
    await gone(child);
    expect(child.signalCode).toBe('SIGTERM');
    expect(stillRunning(rec)).toBe(false);
  });

  test('a different command line or start time under the same pid is left alone', async () => {
    const { child, rec } = await sleeper();
    for (const other of [
      { ...rec, cmdline: ['sleep', '301'].join('\0') },
      { ...rec, startTime: String(Number(rec.startTime) - 1) },
    ]) {
      expect(stillRunning(other)).toBe(false);
      expect(await stopRecorded(other, 1_000)).toBe(false);
    }
    expect(child.exitCode).toBeNull();
    expect(child.signalCode).toBeNull();
    child.kill('SIGKILL');
    await gone(child);
  });

  test('the pid file is written whole and read back; a damaged one is a clear error', () => {
    const f = new PidFile(join(dir, 'pids.json'));
    expect(f.read()).toBeNull();
    const demo = identify('tre-demo', process.pid) as Recorded;
    f.write({ demo, children: [] });
    expect(f.read()).toEqual({ demo, children: [] });
    writeFileSync(f.path, '{"demo": ');
    expect(() => f.read()).toThrow(/pids\.json is unreadable .*remove it/);
    f.remove();
    expect(f.read()).toBeNull();
  });
});
