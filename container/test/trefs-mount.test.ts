/**
 * The agent's trefs mount with the real trefs CLI and FUSE (file-backed key service): the key
 * goes over fd 3 and its buffer is zeroed, a refusal names trefs's reason and leaves nothing
 * mounted, and unmount leaves no mount even when the daemon was killed.
 */
import { afterAll, beforeAll, describe, expect, jest, test } from '@jest/globals';
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateKeyPair, type KeyPair } from '@tre/crypto';
import { FileKeyService, MemoryKeyService } from '@tre/trefs';
import pino from 'pino';
import { cipherDirOf, isMounted, keyInput, TrefsMount } from '../src/trefs-mount.js';

jest.setTimeout(90_000);

const TREFS_CLI = resolve(
  dirname(fileURLToPath(import.meta.url)),
  '..',
  '..',
  'trefs',
  'dist',
  'cli.js',
);
const log = pino({ level: 'silent' });
let dir: string;
let kek: KeyPair;
let state: string;

const kekJson = (k: KeyPair) =>
  Buffer.from(
    JSON.stringify({ kem: k.kem, privateKey: Buffer.from(k.privateKey).toString('base64url') }),
  );

function settings() {
  return { command: [process.execPath, TREFS_CLI], cipherRoot: dir, kmsUrl: `file:${state}` };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tre-agent-trefs-'));
  kek = await generateKeyPair('x25519');
  const { service } = await MemoryKeyService.createProject('p1', kek);
  state = join(dir, 'kms.json');
  await FileKeyService.save(state, service.project);
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

function fresh(name: string) {
  const cipherDir = join(dir, `${name}-cipher`);
  const mountpoint = join(dir, `${name}-mnt`);
  mkdirSync(cipherDir);
  mkdirSync(mountpoint);
  return { cipherDir, mountpoint };
}

describe('TrefsMount', () => {
  test('keyInput adds the KMS token without turning the key into a string', () => {
    const k = Buffer.from('{"kem":"x25519","privateKey":"AAAA"}');
    expect(JSON.parse(keyInput(k, 'tok"en').toString())).toEqual({
      kem: 'x25519',
      privateKey: 'AAAA',
      kmsToken: 'tok"en',
    });
    expect(keyInput(k, undefined).equals(k)).toBe(true);
    expect(() => keyInput(Buffer.from('no object'), 't')).toThrow(/malformed/);
  });

  test("the project's cipher directory: under cipherRoot, or the ingress's layout", () => {
    expect(cipherDirOf({ cipherRoot: '/srv/tre/projects' }, 'p1')).toBe('/srv/tre/projects/p1');
    expect(cipherDirOf({ cipherRoot: '/srv/in/projects/{project}/cipher' }, 'p1')).toBe(
      '/srv/in/projects/p1/cipher',
    );
    for (const bad of ['..', '../x', 'a/b', '', '.hidden']) {
      expect(() => cipherDirOf({ cipherRoot: '/srv/in/{project}' }, bad)).toThrow(
        /invalid project/,
      );
    }
  });

  test('mounts with the key on fd 3, writes land as ciphertext, unmount leaves nothing', async () => {
    const { cipherDir, mountpoint } = fresh('ok');
    const key = kekJson(kek);
    const socket = join(dir, 'ok-key-agent.sock');
    const m = await TrefsMount.start({
      settings: settings(),
      project: 'p1',
      cipherDir,
      mountpoint,
      kek: key,
      kmsToken: undefined,
      keyAgentSocket: socket,
      log,
    });
    expect(key.every((b) => b === 0)).toBe(true);
    expect(isMounted(mountpoint)).toBe(true);
    // The key agent the lab uses answers on the socket, only to its owner.
    expect(statSync(socket).isSocket()).toBe(true);
    expect(statSync(socket).mode & 0o777).toBe(0o600);
    writeFileSync(join(mountpoint, 'notes.txt'), 'plain words here');
    expect(readFileSync(join(mountpoint, 'notes.txt'), 'utf8')).toBe('plain words here');
    const names = readdirSync(cipherDir).filter((n) => n !== 'gocryptfs.diriv');
    expect(names).toHaveLength(1);
    expect(names[0]).not.toContain('notes');
    expect(readFileSync(join(cipherDir, names[0] as string)).includes('plain words')).toBe(false);
    expect(await m.unmount()).toBe(true);
    expect(isMounted(mountpoint)).toBe(false);
    expect(readdirSync(mountpoint)).toEqual([]);
  });

  test('a wrong key is refused with trefs reason and nothing is mounted', async () => {
    const { cipherDir, mountpoint } = fresh('wrong');
    const other = await generateKeyPair('x25519');
    await expect(
      TrefsMount.start({
        settings: settings(),
        project: 'p1',
        cipherDir,
        mountpoint,
        kek: kekJson(other),
        kmsToken: undefined,
        log,
      }),
    ).rejects.toThrow(/key does not open the project key/);
    expect(isMounted(mountpoint)).toBe(false);
  });

  test('a directory that is not a cipher tree is refused', async () => {
    const { cipherDir, mountpoint } = fresh('bad');
    writeFileSync(join(cipherDir, 'stray.txt'), 'x');
    await expect(
      TrefsMount.start({
        settings: settings(),
        project: 'p1',
        cipherDir,
        mountpoint,
        kek: kekJson(kek),
        kmsToken: undefined,
        log,
      }),
    ).rejects.toThrow(/no usable cipher directory/);
    expect(isMounted(mountpoint)).toBe(false);
  });

  test('a killed daemon leaves no dead mount behind', async () => {
    const { cipherDir, mountpoint } = fresh('killed');
    const m = await TrefsMount.start({
      settings: settings(),
      project: 'p1',
      cipherDir,
      mountpoint,
      kek: kekJson(kek),
      kmsToken: undefined,
      log,
    });
    let exited = false;
    m.onExit(() => (exited = true));
    process.kill(m.pid as number, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 500));
    expect(exited).toBe(true);
    expect(isMounted(mountpoint)).toBe(true);
    expect(await m.unmount()).toBe(true);
    expect(isMounted(mountpoint)).toBe(false);
  });
});
