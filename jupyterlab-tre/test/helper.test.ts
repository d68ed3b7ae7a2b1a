/**
 * tre-lab-helper as the server extension runs it: a process, the request on stdin, one JSON
 * answer on stdout, against a real KMS. Checks the export folder, files it (frozen snapshots,
 * DEKs wrapped to the requester and each reviewer), and refuses what it must.
 */
import { spawn } from 'node:child_process';
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { encodePublicKey, generateKeyPair, unwrapKey } from '@tre/crypto';
import type { KmsClient } from '@tre/kms-service/client';
import { startKeyAgentDouble, type KeyAgentDouble } from './key-agent-double.js';
import { startKms, type TestKms } from './kms.js';

const CLI = new URL('../helper/dist/cli.js', import.meta.url).pathname;
const P = 'helper-p';
let t: TestKms;
let dir: string;
const kps: Record<string, Awaited<ReturnType<typeof generateKeyPair>>> = {};
const clients: Record<string, KmsClient> = {};

function run(
  cmd: string[],
  input: unknown,
): Promise<{ code: number; out: Record<string, unknown>; err: string; argv: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [CLI, ...cmd], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('error', reject);
    p.on('close', (code) =>
      resolve({
        code: code ?? -1,
        out: out.trim() ? (JSON.parse(out) as Record<string, unknown>) : {},
        err,
        argv: [CLI, ...cmd].join(' '),
      }),
    );
    p.stdin.end(typeof input === 'string' ? input : JSON.stringify(input));
  });
}

const tokenOf = (name: string): string => t.token(name);

beforeAll(async () => {
  t = await startKms();
  dir = mkdtempSync(join(tmpdir(), 'tre-lab-helper-'));
  for (const name of ['pia', 'dora', 'rex', 'nokey']) {
    clients[name] = await t.onboard(name);
    if (name !== 'nokey') {
      kps[name] = await generateKeyPair();
      await clients[name]!.addKek(encodePublicKey(kps[name]!));
    }
  }
  await clients.pia!.proposeProject({ id: P, title: 'Helper' });
  await clients.pia!.addMember(P, { username: 'dora', role: 'data_owner' });
  await clients.pia!.addMember(P, { username: 'rex', role: 'researcher' });
  await clients.dora!.consent(P);
});

afterAll(async () => {
  await t?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('check', () => {
  test('every file of the folder with its record; non-tables are review', async () => {
    const ex = join(dir, 'check-export');
    mkdirSync(join(ex, 'sub'), { recursive: true });
    writeFileSync(join(ex, 'a.csv'), 'g,n\nx,12\n');
    writeFileSync(join(ex, 'sub', 'b.csv'), 'g,n\nx,3\n');
    writeFileSync(join(ex, 'plot.png'), 'not really a png');
    const r = await run(['check'], { exportDir: ex });
    expect(r.code).toBe(0);
    const files = r.out.files as Array<{ path: string; size: number; sdc: { verdict: string } }>;
    expect(files.map((f) => [f.path, f.sdc.verdict])).toEqual([
      ['a.csv', 'pass'],
      ['plot.png', 'review'],
      ['sub/b.csv', 'fail'],
    ]);
    expect(files[0]!.size).toBe(9);
  });

  test('a missing folder is empty; a symlink is refused; bad stdin is a usage error', async () => {
    expect((await run(['check'], { exportDir: join(dir, 'nope') })).out).toEqual({ files: [] });
    const ex = join(dir, 'link-export');
    mkdirSync(ex);
    symlinkSync('/etc/passwd', join(ex, 'passwd.csv'));
    const r = await run(['check'], { exportDir: ex });
    expect(r.code).toBe(1);
    expect(r.out).toEqual({
      error: {
        code: 'bad_export',
        message: 'passwd.csv is a symbolic link: copy the file itself into export/',
      },
    });
    const bad = await run(['check'], 'not json');
    expect(bad.code).toBe(2);
    expect(bad.err).toContain('stdin must be one JSON object');
    expect((await run(['frobnicate'], {})).code).toBe(2);
    expect((await run(['check'], {})).err).toContain('"exportDir" must be a non-empty string');
  });
});

describe('file', () => {
  test('files the folder: snapshots in the outbox, one wrap per recipient, records attached', async () => {
    const ex = join(dir, 'file-export');
    mkdirSync(ex);
    writeFileSync(join(ex, 'ok.csv'), 'ward,n\nA,40\nB,31\n');
    writeFileSync(join(ex, 'small.csv'), 'ward,n\nA,40\nB,2\n');
    const outbox = join(dir, 'outbox');
    const token = tokenOf('rex');
    const r = await run(['file'], {
      kmsUrl: t.url,
      token,
      project: P,
      exportDir: ex,
      outbox,
      title: 'Wards',
    });
    expect(r.code).toBe(0);
    expect(r.argv).not.toContain(token);
    expect(JSON.stringify(r.out)).not.toContain(token);
    const view = r.out as {
      id: number;
      state: string;
      files: Array<{
        fileId: string;
        path: string;
        sdc: { verdict: string };
        keyHolders: string[];
      }>;
    };
    expect(view.state).toBe('draft');
    expect(view.files.map((f) => [f.path, f.sdc.verdict])).toEqual([
      ['ok.csv', 'pass'],
      ['small.csv', 'fail'],
    ]);
    for (const f of view.files) expect([...f.keyHolders].sort()).toEqual(['dora', 'pia', 'rex']);
    expect(readdirSync(join(outbox, P)).sort()).toEqual(view.files.map((f) => f.fileId).sort());
    // The filing is complete enough to submit, and a reviewer can unwrap their DEK.
    expect((await clients.rex!.submitEgress(P, view.id)).state).toBe('submitted');
    const k = await clients.dora!.egressReviewKey(P, view.id, view.files[0]!.fileId);
    const dek = await unwrapKey(k.wrapped, kps.dora!, {
      purpose: 'egress',
      projectId: P,
      fileId: view.files[0]!.fileId,
      recipient: 'dora',
    });
    expect(dek.length).toBe(32);
  });

  test('refusals: a reviewer without a key, an empty folder, a wrong token', async () => {
    const ex = join(dir, 'refuse-export');
    mkdirSync(ex);
    const base = { kmsUrl: t.url, project: P, exportDir: ex, outbox: join(dir, 'outbox2') };
    const empty = await run(['file'], { ...base, token: tokenOf('rex') });
    expect(empty.code).toBe(1);
    expect((empty.out.error as { code: string }).code).toBe('empty_export');
    writeFileSync(join(ex, 'a.csv'), 'g,n\nx,12\n');
    await clients.pia!.addMember(P, { username: 'nokey', role: 'data_owner' });
    const nokey = await run(['file'], { ...base, token: tokenOf('rex') });
    expect(nokey.out.error).toEqual({
      code: 'no_key',
      message: 'nokey has no key yet: they must set one up first',
    });
    await clients.pia!.removeMember(P, 'nokey');
    const wrong = await run(['file'], { ...base, token: 'tok-nobody' });
    expect(wrong.code).toBe(1);
    expect(wrong.out.error).toMatchObject({ status: 401, code: 'unauthorized' });
  });
});

describe('in a session: through the key agent', () => {
  let mount: string;
  let rexAgent: KeyAgentDouble;
  let doraAgent: KeyAgentDouble;
  let session: Record<string, unknown>;

  beforeAll(async () => {
    mount = join(dir, 'mount');
    const cipher = join(dir, 'cipher');
    mkdirSync(join(mount, 'export', 'tables'), { recursive: true });
    mkdirSync(cipher);
    writeFileSync(join(mount, 'export', 'tables', 'ok.csv'), 'ward,n\nA,40\nB,31\n');
    writeFileSync(join(mount, 'export', 'small.csv'), 'ward,n\nA,40\nB,2\n');
    const recipients = (['rex', 'pia', 'dora'] as const).map(
      (n) => [n, kps[n]!] as [string, (typeof kps)[string]],
    );
    const common = { mountDir: mount, cipherDir: cipher, projectId: P, recipients };
    rexAgent = await startKeyAgentDouble({
      ...common,
      socket: join(dir, 'rex.sock'),
      username: 'rex',
      kek: kps.rex!,
      kms: clients.rex!,
    });
    // The data owner's own session of the same project tree.
    doraAgent = await startKeyAgentDouble({
      ...common,
      socket: join(dir, 'dora.sock'),
      username: 'dora',
      kek: kps.dora!,
      kms: clients.dora!,
    });
    session = {
      kmsUrl: t.url,
      project: P,
      exportDir: join(mount, 'export'),
      keyAgent: rexAgent.socket,
    };
  });

  afterAll(async () => {
    await rexAgent?.stop();
    await doraAgent?.stop();
  });

  test('check names files by their project path when asked to', async () => {
    const r = await run(['check'], { exportDir: join(mount, 'export'), pathPrefix: 'export/' });
    expect(
      (r.out.files as Array<{ path: string; sdc: { path: string } }>).map((f) => [
        f.path,
        f.sdc.path,
      ]),
    ).toEqual([
      ['export/small.csv', 'export/small.csv'],
      ['export/tables/ok.csv', 'export/tables/ok.csv'],
    ]);
  });

  test('filing is the agent freeze: its manifest and wraps filed, no DEK in the container; lift once returned', async () => {
    const token = tokenOf('rex');
    rexAgent.calls.length = 0;
    const r = await run(['file'], { ...session, token, title: 'Session outputs' });
    expect(r.code).toBe(0);
    const view = r.out as {
      id: number;
      files: Array<{ fileId: string; path: string; sha256: string; size: number }>;
    };
    expect(rexAgent.calls).toEqual(['POST /freeze']);
    expect(rexAgent.frozen.get(view.id)).toEqual(['export/small.csv', 'export/tables/ok.csv']);
    expect(statSync(join(mount, 'export', 'small.csv')).mode & 0o222).toBe(0);
    expect(view.files.map((f) => f.path)).toEqual(['export/small.csv', 'export/tables/ok.csv']);
    // Refiling the draft replaces its freeze; the files keep their IDs (trefs's file IDs).
    const refiled = await run(['file'], { ...session, token, requestId: view.id });
    expect(refiled.code).toBe(0);
    expect(rexAgent.calls).toEqual(['POST /freeze', 'POST /freeze']);
    const filed = await clients.rex!.egress(P, view.id);
    expect(filed.files.map((f) => f.fileId)).toEqual(view.files.map((f) => f.fileId));
    // A reviewer opens a filed file in their own session once it is submitted.
    await clients.rex!.submitEgress(P, view.id);
    const opened = await run(['review'], {
      project: P,
      keyAgent: doraAgent.socket,
      mountDir: mount,
      requestId: view.id,
      fileId: view.files[1]!.fileId,
    });
    expect(opened.code).toBe(0);
    expect(opened.out).toEqual({
      path: 'export/tables/ok.csv',
      size: view.files[1]!.size,
      verified: true,
      text: 'ward,n\nA,40\nB,31\n',
    });
    expect(doraAgent.calls).toEqual(['POST /egress/review-key', 'POST /manifest', 'POST /']);
    // Under review the page cannot unfreeze, nor refile.
    const early = await run(['lift'], { ...session, token, requestId: view.id });
    expect(early.out).toEqual({ requestId: view.id, state: 'submitted', lifted: false });
    expect(rexAgent.frozen.has(view.id)).toBe(true);
    const refile = await run(['file'], { ...session, token, requestId: view.id });
    expect(refile.out.error).toMatchObject({ code: 'wrong_state' });
    expect(rexAgent.frozen.has(view.id)).toBe(true);
    // Returned by a reviewer: the files are the requester's to change again.
    await clients.dora!.decideEgress(P, view.id, 'return');
    expect((await run(['lift'], { ...session, token, requestId: view.id })).out).toEqual({
      requestId: view.id,
      state: 'returned',
      lifted: true,
    });
    expect(rexAgent.frozen.has(view.id)).toBe(false);
  });

  test('a file changed after filing is refused to the reviewer; lift only once withdrawn', async () => {
    const token = tokenOf('rex');
    const r = await run(['file'], { ...session, token, title: 'Second' });
    const view = r.out as { id: number; files: Array<{ fileId: string; path: string }> };
    await clients.rex!.submitEgress(P, view.id);
    // The double's freeze is a mode bit; root or the owner can still change it, trefs cannot.
    const small = join(mount, 'export', 'small.csv');
    rmSync(small);
    writeFileSync(small, 'ward,n\nA,40\nB,3\n');
    const changed = await run(['review'], {
      project: P,
      keyAgent: doraAgent.socket,
      mountDir: mount,
      requestId: view.id,
      fileId: view.files.find((f) => f.path === 'export/small.csv')!.fileId,
    });
    expect(changed.code).toBe(1);
    expect(changed.out.error).toMatchObject({ code: 'changed', status: 409 });
    expect(changed.out).not.toHaveProperty('text');
    await clients.pia!.decideEgress(P, view.id, 'return');
    await clients.rex!.withdrawEgress(P, view.id);
    const lifted = await run(['lift'], { ...session, token, requestId: view.id });
    expect(lifted.out).toEqual({ requestId: view.id, state: 'withdrawn', lifted: true });
    expect(rexAgent.frozen.has(view.id)).toBe(false);
    expect(statSync(join(mount, 'export', 'tables', 'ok.csv')).mode & 0o200).toBe(0o200);
  });

  test('a refused filing lifts the freeze it made; agent refusals keep their status', async () => {
    const token = tokenOf('rex');
    // The KMS refuses a filing whose wraps are malformed: the freeze goes again.
    rexAgent.breakWrapsNext();
    const r = await run(['file'], { ...session, token, title: 'Refused' });
    expect(r.code).toBe(1);
    expect(r.out.error).toMatchObject({ status: 400 });
    expect([...rexAgent.frozen.values()].flat()).not.toContain('export/small.csv');
    expect(rexAgent.calls.slice(-2)).toEqual(['POST /freeze', 'POST /freeze/lift']);
    rexAgent.failNext('/freeze', 403);
    const refused = await run(['file'], { ...session, token, title: 'Refused' });
    expect(refused.out.error).toMatchObject({ code: 'not_yours', status: 403 });
    const grants = await run(['grants'], { project: P, keyAgent: rexAgent.socket });
    expect(grants.out).toEqual({ completed: [], skipped: [] });
  });

  test('before a submit the files are frozen again: a file changed after a lift is refused (409)', async () => {
    const token = tokenOf('rex');
    const filed = await run(['file'], { ...session, token, title: 'Lifted draft' });
    expect(filed.code).toBe(0);
    const id = (filed.out as { id: number }).id;
    const small = join(mount, 'export', 'small.csv');
    // A draft's freeze may be lifted; unchanged files pass and are frozen again.
    expect((await run(['lift'], { ...session, token, requestId: id })).out).toMatchObject({
      lifted: true,
    });
    expect(statSync(small).mode & 0o200).toBe(0o200);
    const same = await run(['verify'], { ...session, token, requestId: id });
    expect(same.out).toEqual({ requestId: id, state: 'draft', verified: 2 });
    expect(rexAgent.frozen.get(id)).toEqual(['export/small.csv', 'export/tables/ok.csv']);
    expect(statSync(small).mode & 0o222).toBe(0);
    // Lifted and edited: refused with the path, and the check's freeze lifted again.
    await run(['lift'], { ...session, token, requestId: id });
    writeFileSync(small, 'ward,n\nA,40\nB,12\n');
    const changed = await run(['verify'], { ...session, token, requestId: id });
    expect(changed.code).toBe(1);
    expect(changed.out.error).toMatchObject({ code: 'changed_since_filing', status: 409 });
    expect((changed.out.error as { message: string }).message).toMatch(
      /export\/small\.csv changed since it was filed.*refile/,
    );
    expect((changed.out.error as { message: string }).message).not.toMatch(/ok\.csv/);
    expect(rexAgent.frozen.has(id)).toBe(false);
    // A filed file deleted since is refused the same way.
    const ok = join(mount, 'export', 'tables', 'ok.csv');
    rmSync(ok);
    const gone = await run(['verify'], { ...session, token, requestId: id });
    expect(gone.out.error).toMatchObject({ code: 'changed_since_filing', status: 409 });
    writeFileSync(ok, 'ward,n\nA,40\nB,31\n');
    // Refiled, the request passes and is submitted with what the reviewers will see.
    expect((await run(['file'], { ...session, token, requestId: id })).code).toBe(0);
    const refiled = await run(['verify'], { ...session, token, requestId: id });
    expect(refiled.out).toMatchObject({ verified: 2 });
    const view = await clients.rex!.submitEgress(P, id);
    expect(view.state).toBe('submitted');
    // Under review there is nothing to check: the KMS decides about a second submit.
    const late = await run(['verify'], { ...session, token, requestId: id });
    expect(late.out).toEqual({ requestId: id, state: 'submitted', verified: 0 });
    await clients.pia!.decideEgress(P, id, 'return');
    await clients.rex!.withdrawEgress(P, id);
    await run(['lift'], { ...session, token, requestId: id });
  });

  test('an agent without the operations, or none at all: 501 / 502 with a reason', async () => {
    const old = await startKeyAgentDouble({
      socket: join(dir, 'old.sock'),
      mountDir: mount,
      cipherDir: join(dir, 'cipher'),
      projectId: P,
      username: 'rex',
      kek: kps.rex!,
      kms: clients.rex!,
      recipients: [],
      missing: ['/freeze', '/freeze/lift', '/manifest', '/grants', '/egress/review-key'],
    });
    try {
      const r = await run(['file'], { ...session, keyAgent: old.socket, token: tokenOf('rex') });
      expect(r.out.error).toMatchObject({ code: 'not_offered', status: 501 });
    } finally {
      await old.stop();
    }
    const none = await run(['grants'], { project: P, keyAgent: join(dir, 'nothing.sock') });
    expect(none.code).toBe(1);
    expect(none.out.error).toMatchObject({ code: 'agent_unreachable', status: 502 });
    const both = await run(['file'], { ...session, outbox: dir, token: tokenOf('rex') });
    expect(both.code).toBe(2);
  });
});
