/**
 * A central audit log that refuses the ingress's batches stalls the mirror cursor; the ingress
 * says so in its metrics (stalled, backlog, failures) until the log takes the entries again.
 * The central log is a stand-in here; kms-mode.test.ts mirrors into a real KMS.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { StaticAuthority, tokenHash } from '../src/ingress/authority.js';
import type { ServiceAuditEntry } from '../src/ingress/authority.js';
import { IngressServer } from '../src/ingress/server.js';

const dir = mkdtempSync(join(tmpdir(), 'tre-mirror-'));
const TOKEN = 'mirror-token-1234567890';
const received: ServiceAuditEntry[] = [];
let refuse = true;
let server: IngressServer;
let base: string;

class RefusingLog extends StaticAuthority {
  async appendAudit(events: ServiceAuditEntry[]): Promise<void> {
    if (refuse) throw new Error('400 bad audit batch');
    received.push(...events);
  }
}

const metric = async (name: string): Promise<number> => {
  const text = await (await fetch(`${base}/metrics`)).text();
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  if (!m) throw new Error(`no metric ${name}`);
  return Number(m[1]);
};

const openRequest = () =>
  fetch(`${base}/v1/projects/p1/ingress-requests`, {
    method: 'POST',
    headers: { Authorization: `token ${TOKEN}` },
  });

beforeAll(async () => {
  server = await IngressServer.create({
    root: join(dir, 'root'),
    authority: new RefusingLog([
      { tokenSha256: tokenHash(TOKEN), username: 'dora', roles: { p1: 'data_owner' } },
    ]),
    logger: pino({ level: 'silent' }),
  });
  base = `http://127.0.0.1:${await server.listen(0)}`;
});

afterAll(async () => {
  refuse = false;
  await server?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('audit mirror metrics', () => {
  it('shows a refused batch as a stalled cursor with a backlog, and clears once accepted', async () => {
    expect(await metric('tre_ingress_audit_mirror_stalled')).toBe(0);
    expect((await openRequest()).status).toBe(201);
    await server.auditMirrored();
    expect(await metric('tre_ingress_audit_mirror_stalled')).toBe(1);
    expect(await metric('tre_ingress_audit_mirror_backlog')).toBe(1);
    expect(await metric('tre_ingress_audit_mirror_failures_total')).toBeGreaterThanOrEqual(1);
    expect(received).toEqual([]);

    refuse = false;
    expect((await openRequest()).status).toBe(201);
    await server.auditMirrored();
    expect(await metric('tre_ingress_audit_mirror_stalled')).toBe(0);
    expect(await metric('tre_ingress_audit_mirror_backlog')).toBe(0);
    expect(received.map((e) => e.action)).toEqual(['ingress.open', 'ingress.open']);
  });
});
