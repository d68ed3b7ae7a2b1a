/**
 * The authorization matrix: every endpoint x every role x every state, generated from the one
 * EXPECTATIONS table below (written from the issue, independently of src/policy.ts). Exactly the
 * allowed cells succeed; every other cell is refused with the reason the table predicts.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { encodePublicKey, fingerprint, type WrappedKey } from '@tre/crypto';
import { KmsClientError, type KmsClient } from '../src/client.js';
import type { Kms } from '../src/kms.js';
import { DAY, startKms, type TestKms } from './helpers.js';

type Role = 'pi' | 'researcher' | 'data_owner' | 'reviewer';
type Actor = Role | 'non_member' | 'admin' | 'service';
type UserState =
  'ok' | 'agreement_outdated' | 'agreement_not_accepted' | 'training_expired' | 'training_missing';
type ProjectState = 'normal' | 'not_consented' | 'closed' | 'before_window' | 'after_window';

interface Fixture {
  projectId: string;
  fileId: string;
  /** Registered by an ingress upload and not yet confirmed. */
  pendingFileId: string;
  grantId: number;
  prefix: string;
}

interface Expectation {
  /** Roles that may do it (members only). */
  roles: Role[];
  /** Needs Safe People (agreement + trainings). */
  people: boolean;
  open: boolean;
  consented: boolean;
  window: boolean;
  /** Hub admins may do it without being members. */
  admins?: boolean;
  /** Done by a trusted hub service (or a hub admin), never by a member. */
  service?: boolean;
  call(c: KmsClient, f: Fixture): Promise<unknown>;
}

const ALL: Role[] = ['pi', 'researcher', 'data_owner', 'reviewer'];
const HOLDERS: Role[] = ['pi', 'researcher', 'data_owner'];
const b64 = (n: number): string => randomBytes(n).toString('base64url');

function fakePublicKey(): { text: string; kid: string } {
  const publicKey = randomBytes(32);
  const kid = fingerprint('x25519', publicKey);
  return { text: encodePublicKey({ kem: 'x25519', kid, publicKey }), kid };
}
const fakeWrapped = (kid: string): WrappedKey => ({
  v: 1,
  kid,
  kem: 'x25519',
  enc: b64(32),
  ct: b64(48),
});

let t: TestKms;
let kms: Kms;
const kekOf = new Map<string, string>();
const projectKid = new Map<string, string>();

const EXPECTATIONS: Record<string, Expectation> = {
  getProject: {
    roles: ALL,
    people: false,
    open: false,
    consented: false,
    window: false,
    admins: true,
    call: (c, f) => c.project(f.projectId),
  },
  consent: {
    roles: ['data_owner'],
    people: true,
    open: true,
    consented: false,
    window: true,
    call: (c, f) => c.consent(f.projectId),
  },
  closeProject: {
    roles: ['pi', 'data_owner'],
    people: false,
    open: true,
    consented: false,
    window: false,
    admins: true,
    call: (c, f) => c.closeProject(f.projectId),
  },
  addMember: {
    roles: ['pi'],
    people: true,
    open: true,
    consented: false,
    window: true,
    call: (c, f) => c.addMember(f.projectId, { username: 'ok.extra', role: 'researcher' }),
  },
  removeMember: {
    roles: ['pi'],
    people: true,
    open: true,
    consented: false,
    window: true,
    call: (c, f) => c.removeMember(f.projectId, 'ok.leaver'),
  },
  publishEpoch: {
    roles: ['pi', 'data_owner'],
    people: true,
    open: true,
    consented: false,
    window: true,
    call: (c, f) => {
      const k = fakePublicKey();
      return c.publishEpoch(f.projectId, {
        epoch: 2,
        publicKey: k.text,
        previous: fakeWrapped(k.kid),
        wraps: [],
      });
    },
  },
  releaseProjectKey: {
    roles: HOLDERS,
    people: true,
    open: true,
    consented: true,
    window: true,
    call: (c, f) => c.projectKey(f.projectId),
  },
  listGrants: {
    roles: ['pi', 'data_owner'],
    people: true,
    open: true,
    consented: false,
    window: true,
    call: (c, f) => c.grants(f.projectId),
  },
  completeGrant: {
    roles: ['pi', 'data_owner'],
    people: true,
    open: true,
    consented: false,
    window: true,
    call: (c, f) => c.completeGrant(f.projectId, f.grantId, fakeWrapped(kekOf.get('ok.new')!)),
  },
  registerFiles: {
    roles: HOLDERS,
    people: true,
    open: true,
    consented: true,
    window: true,
    call: (c, f) =>
      c.registerFiles(f.projectId, [
        {
          fileId: randomBytes(16).toString('hex'),
          size: 10,
          sha256: randomBytes(32).toString('hex'),
          epoch: 1,
          wrapped: fakeWrapped(projectKid.get(f.projectId)!),
        },
      ]),
  },
  releaseFileKey: {
    roles: HOLDERS,
    people: true,
    open: true,
    consented: true,
    window: true,
    call: (c, f) => c.fileKey(f.projectId, f.fileId),
  },
  streamFileKeys: {
    roles: HOLDERS,
    people: true,
    open: true,
    consented: true,
    window: true,
    call: async (c, f) => {
      const out = [];
      for await (const k of c.fileKeys(f.projectId)) out.push(k);
      if (out.length !== 1 || out[0]!.fileId !== f.fileId) throw new Error('stream content wrong');
      return out;
    },
  },
  addRecipient: {
    roles: HOLDERS,
    people: true,
    open: true,
    consented: true,
    window: true,
    call: (c, f) =>
      c.addRecipient(
        f.projectId,
        f.fileId,
        `${f.prefix}.rev`,
        fakeWrapped(kekOf.get(`${f.prefix}.rev`)!),
      ),
  },
  releaseReviewKey: {
    roles: ['pi', 'data_owner', 'reviewer'],
    people: true,
    open: true,
    consented: true,
    window: true,
    call: (c, f) => c.reviewKey(f.projectId, f.fileId),
  },
  appendFsEvents: {
    roles: HOLDERS,
    people: false,
    open: false,
    consented: false,
    window: false,
    call: (c, f) =>
      c.appendFsEvents(f.projectId, [
        {
          op: 'open',
          path: 'data/a.csv',
          pid: 42,
          exe: '/usr/bin/python3',
          time: new Date().toISOString(),
        },
      ]),
  },
  confirmFiles: {
    roles: [],
    people: false,
    open: true,
    consented: false,
    window: false,
    service: true,
    call: async (c, f) => {
      const r = await c.confirmFiles(f.projectId, [f.pendingFileId]);
      if (r.confirmed !== 1) throw new Error('nothing confirmed');
      return r;
    },
  },
  destroyFile: {
    roles: [],
    people: false,
    open: false,
    consented: false,
    window: false,
    service: true,
    call: async (c, f) => {
      const r = await c.destroyFile(f.projectId, f.pendingFileId);
      if (r.destroyed !== 1) throw new Error('nothing destroyed');
      return r;
    },
  },
};

const USER_STATES: UserState[] = [
  'ok',
  'agreement_outdated',
  'agreement_not_accepted',
  'training_expired',
  'training_missing',
];
const PROJECT_STATES: ProjectState[] = [
  'normal',
  'not_consented',
  'closed',
  'before_window',
  'after_window',
];
const STATES: Array<[UserState, ProjectState]> = [
  ...PROJECT_STATES.map((p): [UserState, ProjectState] => ['ok', p]),
  ...USER_STATES.filter((u) => u !== 'ok').map((u): [UserState, ProjectState] => [u, 'normal']),
];
const ACTORS: Actor[] = [
  'pi',
  'researcher',
  'data_owner',
  'reviewer',
  'non_member',
  'admin',
  'service',
];
const ACTOR_SUFFIX: Record<Actor, string> = {
  pi: 'pi',
  researcher: 'res',
  data_owner: 'do',
  reviewer: 'rev',
  non_member: 'none',
  admin: 'admin',
  service: 'svc',
};

/** What the table predicts, in the documented order of conditions. */
function expected(e: Expectation, actor: Actor, us: UserState, ps: ProjectState): string {
  if (e.service) {
    if (actor !== 'service' && actor !== 'admin') return 'service_required';
    return e.open && ps === 'closed' ? 'project_closed' : 'allow';
  }
  if (actor === 'service') return 'user_required';
  if (e.people && us !== 'ok') return us;
  if (actor === 'admin' || actor === 'non_member')
    return actor === 'admin' && e.admins ? 'allow' : 'not_a_member';
  if (!e.roles.includes(actor)) return 'role_not_allowed';
  if (e.open && ps === 'closed') return 'project_closed';
  if (e.consented && ps === 'not_consented') return 'project_not_consented';
  if (e.window && (ps === 'before_window' || ps === 'after_window')) return 'outside_window';
  return 'allow';
}

function setupUser(name: string, state: UserState, admin = false): void {
  const now = t.clock.now.getTime();
  const stamp = new Date(now).toISOString();
  kms.people.upsert(name, 'Org', null, stamp);
  if (state !== 'agreement_not_accepted') {
    kms.people.acceptAgreement(
      name,
      state === 'agreement_outdated' ? '2019-1' : t.config.agreementVersion,
      stamp,
    );
  }
  for (const kind of ['hpc', 'data_awareness', 'tre_rules'] as const) {
    if (state === 'training_missing' && kind === 'data_awareness') continue;
    const expires =
      state === 'training_expired' && kind === 'tre_rules' ? now - DAY : now + 100 * DAY;
    kms.people.recordTraining(
      name,
      kind,
      new Date(now - 200 * DAY).toISOString(),
      new Date(expires).toISOString(),
      'admin',
    );
  }
  const k = fakePublicKey();
  kms.people.addKek(name, k.kid, 'x25519', k.text, stamp);
  kekOf.set(name, k.kid);
  if (admin) t.as(name, true);
}

let cellNo = 0;
function buildProject(prefix: string, ps: ProjectState, endpoint: string): Fixture {
  const id = `m-${++cellNo}`;
  const now = t.clock.now.getTime();
  const stamp = new Date(now).toISOString();
  const from = ps === 'before_window' ? new Date(now + DAY).toISOString() : null;
  const until = ps === 'after_window' ? new Date(now - DAY).toISOString() : null;
  kms.projects.create(id, 'matrix', '', `${prefix}.pi`, stamp);
  const add = (username: string, role: Role): void =>
    kms.projects.addMember({
      project_id: id,
      username,
      role,
      valid_from: from,
      valid_until: until,
      added_by: `${prefix}.pi`,
      added_at: stamp,
    });
  add(`${prefix}.pi`, 'pi');
  add(`${prefix}.res`, 'researcher');
  add(`${prefix}.do`, 'data_owner');
  add(`${prefix}.rev`, 'reviewer');
  add('ok.leaver', 'researcher');
  add('ok.new', 'researcher');
  if (ps !== 'not_consented' && endpoint !== 'consent')
    kms.projects.consent(id, `${prefix}.do`, stamp);
  const pk = fakePublicKey();
  projectKid.set(id, pk.kid);
  kms.keys.addEpoch({
    project_id: id,
    epoch: 1,
    kem: 'x25519',
    kid: pk.kid,
    public_key: pk.text,
    volume_wrapped: JSON.stringify(fakeWrapped(pk.kid)),
    previous_wrapped: null,
    created_by: `${prefix}.pi`,
    created_at: stamp,
  });
  kms.projects.setEpoch(id, 1);
  for (const u of [`${prefix}.pi`, `${prefix}.res`, `${prefix}.do`, 'ok.leaver']) {
    kms.keys.putWrap(
      id,
      1,
      u,
      kekOf.get(u)!,
      JSON.stringify(fakeWrapped(kekOf.get(u)!)),
      `${prefix}.pi`,
      stamp,
    );
  }
  const grantId = kms.keys.createGrant(id, 'ok.new', 1, stamp)!;
  const fileId = randomBytes(16).toString('hex');
  kms.files.insert(
    {
      file_id: fileId,
      epoch: 1,
      size: 100,
      sha256: randomBytes(32).toString('hex'),
      wrapped: JSON.stringify(fakeWrapped(pk.kid)),
    },
    id,
    `${prefix}.do`,
    stamp,
  );
  for (const u of [`${prefix}.pi`, `${prefix}.do`, `${prefix}.rev`]) {
    kms.files.addRecipient(
      fileId,
      u,
      kekOf.get(u)!,
      'review',
      JSON.stringify(fakeWrapped(kekOf.get(u)!)),
      `${prefix}.res`,
      stamp,
    );
  }
  const pendingFileId = randomBytes(16).toString('hex');
  kms.files.insert(
    {
      file_id: pendingFileId,
      epoch: 1,
      size: 100,
      sha256: randomBytes(32).toString('hex'),
      wrapped: JSON.stringify(fakeWrapped(pk.kid)),
      state: 'pending',
    },
    id,
    `${prefix}.do`,
    stamp,
  );
  if (ps === 'closed') {
    kms.keys.shred(id);
    kms.files.shred(id);
    kms.projects.close(id, stamp);
  }
  return { projectId: id, fileId, pendingFileId, grantId, prefix };
}

beforeAll(async () => {
  t = await startKms();
  kms = t.server.kms;
  for (const us of USER_STATES) {
    for (const a of ACTORS) {
      if (a !== 'service') setupUser(`${us}.${ACTOR_SUFFIX[a]}`, us, a === 'admin');
    }
  }
  for (const extra of ['ok.leaver', 'ok.new', 'ok.extra']) setupUser(extra, 'ok');
});

afterAll(async () => {
  await t.stop();
});

const cells: Array<[string, Actor, UserState, ProjectState]> = [];
for (const endpoint of Object.keys(EXPECTATIONS)) {
  for (const actor of ACTORS) for (const [us, ps] of STATES) cells.push([endpoint, actor, us, ps]);
}

let denials = 0;

describe('project endpoints', () => {
  test.each(cells)('%s as %s, user %s, project %s', async (endpoint, actor, us, ps) => {
    const e = EXPECTATIONS[endpoint]!;
    const f = buildProject(us, ps, endpoint);
    const client = t.as(`${us}.${ACTOR_SUFFIX[actor]}`, actor === 'admin', actor === 'service');
    const want = expected(e, actor, us, ps);
    const got = await e.call(client, f).then(
      () => 'allow',
      (err: unknown) => {
        if (!(err instanceof KmsClientError)) throw err;
        if (err.status !== 403) return `status ${err.status} ${err.code}: ${err.message}`;
        return err.reason ?? 'no reason';
      },
    );
    if (want !== 'allow') denials++;
    expect(got).toBe(want);
  });
});

/**
 * GET /v1/me/projects answers every caller, but its per-project key-release answer must be the
 * one the release endpoint itself gives in that cell (same table), and non-members see nothing.
 */
const meCells: Array<[Actor, UserState, ProjectState]> = [];
for (const actor of ACTORS) for (const [us, ps] of STATES) meCells.push([actor, us, ps]);

describe('my projects', () => {
  test.each(meCells)('as %s, user %s, project %s', async (actor, us, ps) => {
    const f = buildProject(us, ps, 'myProjects');
    const client = t.as(`${us}.${ACTOR_SUFFIX[actor]}`, actor === 'admin', actor === 'service');
    if (actor === 'service') {
      await expect(client.myProjects()).rejects.toMatchObject({
        status: 403,
        reason: 'user_required',
      });
      return;
    }
    const mine = (await client.myProjects()).find((p) => p.id === f.projectId);
    if (actor === 'admin' || actor === 'non_member') {
      expect(mine).toBeUndefined();
      return;
    }
    expect(mine).toBeDefined();
    const want = expected(EXPECTATIONS.releaseProjectKey!, actor, us, ps);
    expect(mine!.keyRelease).toEqual(
      want === 'allow' ? { allowed: true, reason: null } : { allowed: false, reason: want },
    );
    expect(mine!.role).toBe(actor);
    expect(mine!.state).toBe(
      ps === 'closed' ? 'closed' : ps === 'not_consented' ? 'proposed' : 'active',
    );
    expect(mine!.window.open).toBe(ps !== 'before_window' && ps !== 'after_window');
    expect(mine!.consent.dataOwners.map((o) => o.username)).toEqual([`${us}.do`]);
    expect(mine!.keyWrapped).toBe(ps !== 'closed' && actor !== 'reviewer');
    expect(mine!.awaitingGrant).toBeNull();
    // ok.new's grant is completable by a key-holding PI or data owner the policy lets through.
    const canGrant =
      (actor === 'pi' || actor === 'data_owner') &&
      expected(EXPECTATIONS.completeGrant!, actor, us, ps) === 'allow' &&
      ps !== 'closed';
    expect(mine!.grantsToComplete.map((g) => g.username)).toEqual(canGrant ? ['ok.new'] : []);
  });
});

describe('endpoints without a project', () => {
  test('appending service audit events needs a trusted service or a hub admin', async () => {
    const ev = [{ action: 'ingress.confirm', object: 'ingress:1', user: 'ok.do' }];
    const s = await t.as('ingress', false, true).appendAuditEvents(ev);
    expect(s.appended).toBe(1);
    const row = kms.db.prepare('SELECT * FROM audit_log WHERE seq = ?').get(s.seq) as {
      actor: string;
      object: string;
    };
    expect(row).toMatchObject({ actor: 'service:ingress', object: 'ingress:1 user:ok.do' });
    await expect(t.as('ok.admin', true).appendAuditEvents(ev)).resolves.toMatchObject({
      appended: 1,
    });
    for (const who of ['ok.pi', 'ok.none', 'training_expired.do']) {
      await expect(t.as(who).appendAuditEvents(ev)).rejects.toMatchObject({
        status: 403,
        reason: 'service_required',
      });
    }
  });

  test('a service cannot act as a person anywhere else', async () => {
    const svc = t.as('ingress', false, true);
    await expect(svc.me()).rejects.toMatchObject({ status: 403, reason: 'user_required' });
    await expect(svc.myReviews()).rejects.toMatchObject({ reason: 'user_required' });
    await expect(svc.proposeProject({ id: 'svc-prop', title: 'x' })).rejects.toMatchObject({
      reason: 'user_required',
    });
    await expect(svc.trusteeRecoveries()).rejects.toMatchObject({ reason: 'user_required' });
    await expect(svc.listNotifications()).rejects.toMatchObject({ reason: 'user_required' });
  });

  test.each(USER_STATES)('proposing a project as a user in state %s', async (us) => {
    const c = t.as(`${us}.none`);
    const r = await c.proposeProject({ id: `prop-${us.replace(/_/g, '-')}`, title: 'x' }).then(
      () => 'allow',
      (e: KmsClientError) => e.reason,
    );
    expect(r).toBe(us === 'ok' ? 'allow' : us);
  });

  test('an unregistered user cannot propose', async () => {
    await expect(
      t.as('stranger').proposeProject({ id: 'prop-stranger', title: 'x' }),
    ).rejects.toMatchObject({
      status: 403,
      reason: 'not_registered',
    });
  });

  const adminCalls: Array<[string, (c: KmsClient) => Promise<unknown>]> = [
    [
      'recordTraining',
      (c) =>
        c.recordTraining(
          'ok.res',
          'hpc',
          new Date(0).toISOString(),
          new Date(Date.now() + 100 * DAY).toISOString(),
        ),
    ],
    ['setTrustee', (c) => c.setTrustee('ok.res', false)],
    ['listNotifications', (c) => c.listNotifications()],
    ['exportAudit', (c) => c.exportAudit()],
  ];
  test.each(adminCalls)('%s needs a hub admin', async (_name, call) => {
    await expect(call(t.as('ok.admin', true))).resolves.toBeDefined();
    for (const who of ['ok.pi', 'ok.none']) {
      await expect(call(t.as(who))).rejects.toMatchObject({
        status: 403,
        reason: 'admin_required',
      });
    }
  });

  test('trustee endpoints need a trustee with valid training', async () => {
    await expect(t.as('ok.res').trusteeRecoveries()).rejects.toMatchObject({
      reason: 'not_a_trustee',
    });
    kms.people.setTrustee('ok.res', true, new Date().toISOString());
    kms.people.setTrustee('training_expired.res', true, new Date().toISOString());
    await expect(t.as('ok.res').trusteeRecoveries()).resolves.toEqual([]);
    await expect(t.as('training_expired.res').trusteeRecoveries()).rejects.toMatchObject({
      reason: 'training_expired',
    });
  });

  test('no endpoint answers without a hub token', async () => {
    for (const [method, path] of [
      ['GET', '/v1/me'],
      ['GET', '/v1/projects/m-1'],
      ['GET', '/v1/projects/m-1/key'],
      ['GET', '/v1/projects/m-1/files/keys'],
      ['POST', '/v1/projects'],
      ['GET', '/v1/audit/export'],
    ]) {
      const res = await fetch(t.url + path!, {
        method: method!,
        headers: { Authorization: 'token not-a-hub-token' },
      });
      expect(res.status).toBe(401);
      const anon = await fetch(t.url + path!, { method: method! });
      expect(anon.status).toBe(401);
    }
  });

  test('every policy denial is in the audit log with its reason', () => {
    const rows = kms.db
      .prepare("SELECT result FROM audit_log WHERE result LIKE 'denied:%'")
      .all() as Array<{ result: string }>;
    expect(denials).toBeGreaterThan(300);
    expect(rows.length).toBeGreaterThanOrEqual(denials);
  });
});

type RecoveryActor = 'owner' | 'holder' | 'bystander' | 'admin' | 'stranger' | 'service';
type RecoveryState = 'waiting' | 'open' | 'ready' | 'cancelled';
const RECOVERY_ACTORS: RecoveryActor[] = [
  'owner',
  'holder',
  'bystander',
  'admin',
  'stranger',
  'service',
];
const RECOVERY_STATES: RecoveryState[] = ['waiting', 'open', 'ready', 'cancelled'];

/** What the vault rules predict: only a share holder approves, only after the waiting period. */
function expectedApprove(a: RecoveryActor, s: RecoveryState): string {
  if (a === 'service') return 'user_required';
  if (a === 'owner' || a === 'admin' || a === 'stranger') return 'not_a_trustee';
  if (a === 'bystander') return 'not_found';
  if (s === 'waiting') return 'recovery_waiting';
  return s === 'open' ? 'allow' : 'recovery_not_open';
}
function expectedCancel(a: RecoveryActor, s: RecoveryState): string {
  if (a === 'service') return 'user_required';
  if (a !== 'admin') return 'admin_required';
  return s === 'waiting' || s === 'open' ? 'allow' : 'recovery_not_open';
}

describe('vault recovery endpoints', () => {
  let n = 0;
  const clientOf = (a: RecoveryActor, owner: string): KmsClient =>
    a === 'service'
      ? t.as('ingress', false, true)
      : t.as(
          {
            owner,
            holder: 'rv.holder',
            bystander: 'rv.bystander',
            admin: 'ok.admin',
            stranger: 'ok.none',
          }[a],
          a === 'admin',
        );
  beforeAll(() => {
    for (const u of ['rv.holder', 'rv.second', 'rv.bystander']) {
      setupUser(u, 'ok');
      kms.people.setTrustee(u, true, t.clock.now.toISOString());
    }
  });

  function recoveryIn(state: RecoveryState): { owner: string; id: number; recoveryKid: string } {
    const owner = `rv${++n}.owner`;
    setupUser(owner, 'ok');
    const now = t.clock.now.getTime();
    const stamp = new Date(now).toISOString();
    kms.vault.put(
      owner,
      kekOf.get(owner)!,
      2,
      ['rv.holder', 'rv.second'].map((tr) => ({
        trustee: tr,
        wrapped: JSON.stringify(fakeWrapped(kekOf.get(tr)!)),
      })),
      b64(32),
      stamp,
    );
    const rk = fakePublicKey();
    const id = kms.vault.openRecovery(
      owner,
      {
        recoveryPublicKey: rk.text,
        requestedAt: stamp,
        signature: b64(64),
        notBefore: new Date(state === 'waiting' ? now + DAY : now - 1000).toISOString(),
      },
      stamp,
    );
    if (state === 'ready') kms.vault.markReady(id);
    if (state === 'cancelled') kms.vault.cancel(id, 'ok.admin');
    return { owner, id, recoveryKid: rk.kid };
  }

  const outcome = (p: Promise<unknown>): Promise<string> =>
    p.then(
      () => 'allow',
      (e: KmsClientError) => e.reason ?? e.code,
    );

  const cells: Array<[RecoveryActor, RecoveryState]> = [];
  for (const a of RECOVERY_ACTORS) for (const s of RECOVERY_STATES) cells.push([a, s]);

  test.each(cells)('approve as %s, recovery %s', async (a, s) => {
    const r = recoveryIn(s);
    const got = await outcome(
      clientOf(a, r.owner).approveRecovery(r.id, fakeWrapped(r.recoveryKid)),
    );
    expect(got).toBe(expectedApprove(a, s));
  });

  test.each(cells)('cancel as %s, recovery %s', async (a, s) => {
    const r = recoveryIn(s);
    expect(await outcome(clientOf(a, r.owner).cancelRecovery(r.id))).toBe(expectedCancel(a, s));
    const row = kms.vault.recovery(r.id)!;
    const cancelled = s === 'cancelled' || expectedCancel(a, s) === 'allow';
    expect(row.state === 'cancelled').toBe(cancelled);
  });

  test.each(RECOVERY_STATES)('in state %s: who sees the recovery', async (s) => {
    const r = recoveryIn(s);
    const owner = clientOf('owner', r.owner);
    expect((await owner.recovery(r.id)).state).toBe(s);
    expect((await owner.recoveries()).map((x) => [x.id, x.state])).toEqual([[r.id, s]]);
    // Nobody else reads it as theirs.
    for (const a of ['holder', 'stranger', 'admin'] as const) {
      await expect(clientOf(a, r.owner).recovery(r.id)).rejects.toMatchObject({ status: 404 });
    }
    // The share holder sees it only once it is open; a bystander trustee never.
    const seen = async (a: RecoveryActor): Promise<boolean> =>
      (await clientOf(a, r.owner).trusteeRecoveries()).some((x) => x.id === r.id);
    expect(await seen('holder')).toBe(s === 'open');
    expect(await seen('bystander')).toBe(false);
  });
});
