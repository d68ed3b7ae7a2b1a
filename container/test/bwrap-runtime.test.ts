/**
 * The bubblewrap runtime's policy, checked from inside a real container: no network to the host
 * (loopback or its other addresses), a read-only root, writable only /data/<project> and the
 * tmpfs home, and the hub API reachable through the agent's relay and nothing else through it.
 */
import { afterAll, beforeAll, describe, expect, jest, test } from '@jest/globals';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { createHubRelay, PACKAGE_ROOT } from '../src/agent.js';

jest.setTimeout(60_000);

const PROBE = `
import errno, json, socket, sys, urllib.request, urllib.error, time
targets = json.loads(sys.argv[1])
out = {"tcp": {}, "writes": {}}
for t in targets:
    s = socket.socket(socket.AF_INET6 if ":" in t[0] else socket.AF_INET)
    s.settimeout(3)
    try:
        s.connect((t[0], t[1])); out["tcp"][f"{t[0]}:{t[1]}"] = "connected"
    except OSError as e:
        out["tcp"][f"{t[0]}:{t[1]}"] = type(e).__name__
    finally:
        s.close()
for path in ["/usr/tre-probe", "/etc/tre-probe", "/tre-probe", "/var/tre-probe", "/run/tre-probe",
             "/home/tre-probe", "/data/tre-probe", "/data/demo/probe.txt", sys.argv[2] + "/probe.txt"]:
    try:
        with open(path, "w") as f: f.write("x")
        out["writes"][path] = "ok"
    except OSError as e:
        out["writes"][path] = errno.errorcode.get(e.errno, str(e.errno))
for _ in range(50):
    try:
        socket.create_connection(("127.0.0.1", 8081), 1).close(); break
    except OSError:
        time.sleep(0.1)
def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r: return [r.status, r.read().decode()]
    except urllib.error.HTTPError as e: return [e.code, ""]
    except OSError as e: return [0, type(e).__name__]
out["hubApi"] = get("http://127.0.0.1:8081/hub/api/")
out["hubOther"] = get("http://127.0.0.1:8081/hub/login")
out["kmsApi"] = get("http://127.0.0.1:8081/services/kms/v1/me")
out["kmsOther"] = get("http://127.0.0.1:8081/services/kms/openapi.yaml")
out["kmsDots"] = get("http://127.0.0.1:8081/services/kms/v1/%2e%2e/metrics")
out["otherService"] = get("http://127.0.0.1:8081/services/other/v1/x")
print(json.dumps(out))
`;

let dir: string;
let hub: Server;
let relay: Server;
let hubPort: number;

function hostAddresses(): string[] {
  return Object.values(networkInterfaces())
    .flat()
    .filter((a) => a && !a.internal && a.family === 'IPv4')
    .map((a) => (a as { address: string }).address);
}

async function tcpFromHost(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port }, () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tre-bwrap-'));
  mkdirSync(join(dir, 'run'));
  mkdirSync(join(dir, 'data'));
  hub = createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ version: 'hub', path: req.url }));
  });
  // On every address, so that a refused connection from inside is the container's doing.
  await new Promise<void>((r) => hub.listen(0, '0.0.0.0', () => r()));
  hubPort = (hub.address() as AddressInfo).port;
  relay = createHubRelay(
    `http://127.0.0.1:${hubPort}/hub/api`,
    pino({ level: 'silent' }),
    `http://127.0.0.1:${hubPort}/kms`,
  );
  await new Promise<void>((r) => relay.listen(join(dir, 'run', 'hub.sock'), () => r()));
});

afterAll(async () => {
  await new Promise((r) => hub.close(r));
  await new Promise((r) => relay.close(r));
  rmSync(dir, { recursive: true, force: true });
});

describe('bwrap-run', () => {
  test('no network, read-only root, hub API only through the relay', async () => {
    const targets = [['127.0.0.1', hubPort], ...hostAddresses().map((a) => [a, hubPort])];
    for (const [host, port] of targets) {
      // From the host these connect: the refusals below come from the container alone.
      expect(await tcpFromHost(host as string, port as number)).toBe(true);
    }
    const home = '/home/alice';
    const script =
      `python3 ${join(PACKAGE_ROOT, 'entrypoint', 'tre-hub-relay')} --listen 127.0.0.1:8081 ` +
      `--socket /run/tre/hub.sock & exec python3 -c "$PROBE" "$TARGETS" "${home}"`;
    const child = spawn(
      join(PACKAGE_ROOT, 'runtime', 'bwrap-run'),
      [
        '--run-dir',
        join(dir, 'run'),
        '--data-dir',
        join(dir, 'data'),
        '--project',
        'demo',
        '--ro',
        join(PACKAGE_ROOT, 'entrypoint'),
        '--',
        'bash',
        '-c',
        script,
      ],
      {
        env: {
          PATH: '/usr/bin:/bin',
          USER: 'alice',
          PROBE,
          TARGETS: JSON.stringify(targets),
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const code = await new Promise((r) => child.on('exit', r));
    expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
    const out = JSON.parse(stdout) as {
      tcp: Record<string, string>;
      writes: Record<string, string>;
      hubApi: [number, string];
      hubOther: [number, string];
      kmsApi: [number, string];
      kmsOther: [number, string];
      kmsDots: [number, string];
      otherService: [number, string];
    };
    for (const [host, port] of targets) {
      expect(out.tcp[`${host}:${port}`]).not.toBe('connected');
    }
    expect(out.writes).toEqual({
      '/usr/tre-probe': 'EROFS',
      '/etc/tre-probe': 'EROFS',
      '/tre-probe': 'EROFS',
      '/var/tre-probe': 'EROFS',
      '/run/tre-probe': 'EROFS',
      '/home/tre-probe': 'EROFS',
      '/data/tre-probe': 'EROFS',
      '/data/demo/probe.txt': 'ok',
      [`${home}/probe.txt`]: 'ok',
    });
    expect(readFileSync(join(dir, 'data', 'probe.txt'), 'utf8')).toBe('x');
    expect(out.hubApi[0]).toBe(200);
    expect(JSON.parse(out.hubApi[1])).toEqual({ version: 'hub', path: '/hub/api/' });
    expect(out.hubOther[0]).toBe(403);
    // The KMS's API (and nothing else of it, nor any other service) through the same relay.
    expect(out.kmsApi[0]).toBe(200);
    expect(JSON.parse(out.kmsApi[1])).toEqual({ version: 'hub', path: '/kms/v1/me' });
    expect([out.kmsOther[0], out.kmsDots[0], out.otherService[0]]).toEqual([403, 403, 403]);
  });
});
