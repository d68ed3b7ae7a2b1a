/**
 * The agent's trefs mount with the real trefs CLI and FUSE (file-backed key service): the key
 * goes over fd 3 and its buffer is zeroed, a refusal names trefs's reason and leaves nothing
 * mounted, and unmount leaves no mount even when the daemon was killed.
 */
import { afterAll, beforeAll, describe, expect, jest, test } from '@jest/globals';
import { execFile } from 'node:child_process';
import {
  chmodSync,
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
import { PACKAGE_ROOT } from '../src/agent.js';
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

/** Asks the key agent at argv[1] for its API and a file key, as the lab's helper would. */
const AGENT_PROBE = `
import json, os, socket, sys
def call(method, path, body=None):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(sys.argv[1])
    except OSError as e:
        return type(e).__name__
    data = json.dumps(body).encode() if body is not None else b""
    head = f"{method} {path} HTTP/1.1\\r\\nHost: agent\\r\\nContent-Type: application/json\\r\\n"
    s.sendall((head + f"Content-Length: {len(data)}\\r\\nConnection: close\\r\\n\\r\\n").encode() + data)
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    return int(out.split(b" ")[1])
print(json.dumps({"uid": os.getuid(), "api": call("GET", "/openapi.json"),
                  "key": call("POST", "/", {"path": "notes.txt"})}))
`;

function probe(argv: string[]): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) =>
    execFile(argv[0] as string, argv.slice(1), { timeout: 60_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(JSON.parse(stdout)),
    ),
  );
}

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

  test("the key agent answers the container's user inside bubblewrap, and no other uid", async () => {
    const { cipherDir, mountpoint } = fresh('bwrap');
    // The job agent's layout: the socket in the job's run directory, bound at /run/tre.
    const runDir = join(dir, 'bwrap-run');
    mkdirSync(runDir, { mode: 0o700 });
    const socket = join(runDir, 'key-agent.sock');
    const m = await TrefsMount.start({
      settings: settings(),
      project: 'p1',
      cipherDir,
      mountpoint,
      kek: kekJson(kek),
      kmsToken: undefined,
      keyAgentSocket: socket,
      log,
    });
    try {
      writeFileSync(join(mountpoint, 'notes.txt'), 'plain words here');
      expect(statSync(socket).uid).toBe(process.getuid!());
      const inside = await probe([
        join(PACKAGE_ROOT, 'runtime', 'bwrap-run'),
        '--run-dir',
        runDir,
        '--data-dir',
        mountpoint,
        '--project',
        'p1',
        '--',
        '/usr/bin/python3',
        '-c',
        AGENT_PROBE,
        '/run/tre/key-agent.sock',
      ]);
      // A root job's container runs as nobody in its own user namespace, which maps nobody to
      // the job's uid outside: the socket's owner, so the agent answers it.
      expect(inside).toEqual({
        uid: process.getuid!() === 0 ? 65534 : process.getuid!(),
        api: 200,
        key: 200,
      });
      if (process.getuid!() === 0) {
        // Any other uid of the node is refused by the socket's mode alone, even where the
        // directory above it lets it through.
        const asNobody = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'];
        const other = await probe([...asNobody, '/usr/bin/python3', '-c', AGENT_PROBE, socket]);
        expect(other).toEqual({ uid: 65534, api: 'PermissionError', key: 'PermissionError' });
        chmodSync(runDir, 0o711);
        const through = await probe([...asNobody, '/usr/bin/python3', '-c', AGENT_PROBE, socket]);
        chmodSync(runDir, 0o700);
        expect(through).toEqual({ uid: 65534, api: 'PermissionError', key: 'PermissionError' });
      }
    } finally {
      expect(await m.unmount()).toBe(true);
    }
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
