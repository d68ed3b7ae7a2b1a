/**
 * The egress authorization matrix: every egress endpoint x every actor x every request state,
 * from the EXPECTATIONS table below (written from the issue, independently of src/policy.ts).
 * Exactly the allowed cells succeed; every other cell is refused with the predicted reason:
 * wrong role, not the requester, self-review, or wrong state. A second pass files each request
 * as the PI, who then may not review it.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { encodePublicKey, fingerprint, type WrappedKey } from '@tre/crypto';
import { KmsClientError, type EgressFiling, type KmsClient } from '../src/client.js';
import type { Kms } from '../src/kms.js';
import { checkFile } from '../src/sdc/check.js';
import { EgressStore } from '../src/store/egress.js';
import { DAY, startKms, type TestKms } from './helpers.js';

type State =
  | 'draft'
  | 'submitted'
  | 'returned'
  | 'partially_reviewed'
  | 'reviewed'
  | 'approved'
  | 'rejected'
  | 'withdrawn'
  | 'released'
  | 'revoked';
const STATES: State[] = [
  'draft',
  'submitted',
  'returned',
  'partially_reviewed',
  'reviewed',
  'approved',
  'rejected',
  'withdrawn',
  'released',
  'revoked',
];
type Actor = 'requester' | 'pi' | 'data_owner' | 'researcher' | 'reviewer' | 'non_member';
const ACTORS: Actor[] = ['requester', 'pi', 'data_owner', 'researcher', 'reviewer', 'non_member'];
type Party = 'requester' | 'reviewer' | 'either' | 'any';

interface Fixture {
  projectId: string;
  id: number;
  fileId: string;
  requester: string;
}

interface Expectation {
  roles: Array<'pi' | 'researcher' | 'data_owner'>;
  party: Party;
  states: State[];
  call(c: KmsClient, f: Fixture): Promise<unknown>;
}

const HOLDERS: Expectation['roles'] = ['pi', 'researcher', 'data_owner'];
const REVIEWERS: Expectation['roles'] = ['pi', 'data_owner'];
const IN_REVIEW: State[] = ['submitted', 'partially_reviewed', 'reviewed'];
const EDITABLE: State[] = ['draft', 'returned'];
const OPEN: State[] = [...EDITABLE, ...IN_REVIEW];

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
let store: EgressStore;
const kekOf = new Map<string, string>();
const TABLE = 'a,b\nx,3\n';

/** Users: the requester is `e.res` or, in the self-review pass, `e.pi`. */
const NAMES = ['e.pi', 'e.pi2', 'e.do', 'e.res', 'e.res2', 'e.rev', 'e.none'];

function filing(fileId: string, requester: string): EgressFiling {
  const recipients = [requester, ...['e.pi', 'e.pi2', 'e.do'].filter((u) => u !== requester)];
  return {
    fileId,
    path: 'out/t.csv',
    size: 100,
    sha256: randomBytes(32).toString('hex'),
    sdc: checkFile('out/t.csv', TABLE),
    keys: recipients.map((u) => ({ username: u, wrapped: fakeWrapped(kekOf.get(u)!) })),
  };
}

const EXPECTATIONS: Record<string, Expectation> = {
  read: {
    roles: HOLDERS,
    party: 'either',
    states: STATES,
    call: (c, f) => c.egress(f.projectId, f.id),
  },
  putFiles: {
    roles: HOLDERS,
    party: 'requester',
    states: EDITABLE,
    call: (c, f) => c.putEgressFiles(f.projectId, f.id, [filing(f.fileId, f.requester)]),
  },
  justify: {
    roles: HOLDERS,
    party: 'requester',
    states: EDITABLE,
    call: (c, f) =>
      c.justifyEgress(f.projectId, f.id, {
        fileId: f.fileId,
        cell: 'x/b',
        rule: 'threshold',
        text: 'why',
      }),
  },
  submit: {
    roles: HOLDERS,
    party: 'requester',
    states: EDITABLE,
    call: (c, f) => c.submitEgress(f.projectId, f.id),
  },
  withdraw: {
    roles: HOLDERS,
    party: 'requester',
    states: EDITABLE,
    call: (c, f) => c.withdrawEgress(f.projectId, f.id),
  },
  reviewKey: {
    roles: REVIEWERS,
    party: 'reviewer',
    states: IN_REVIEW,
    call: (c, f) => c.egressReviewKey(f.projectId, f.id, f.fileId),
  },
  vote: {
    roles: REVIEWERS,
    party: 'reviewer',
    states: IN_REVIEW,
    call: (c, f) => c.voteEgress(f.projectId, f.id, f.fileId, 'approve'),
  },
  comment: {
    // The requester replies (visible to all); everyone else comments as a reviewer.
    roles: REVIEWERS,
    party: 'reviewer',
    states: OPEN,
    call: (c, f) => c.commentEgress(f.projectId, f.id, { text: 'a note' }),
  },
  return: {
    roles: REVIEWERS,
    party: 'reviewer',
    states: IN_REVIEW,
    call: (c, f) => c.decideEgress(f.projectId, f.id, 'return'),
  },
  approve: {
    roles: REVIEWERS,
    party: 'reviewer',
    states: ['reviewed'],
    call: (c, f) => c.decideEgress(f.projectId, f.id, 'approve'),
  },
  reject: {
    roles: REVIEWERS,
    party: 'reviewer',
    states: ['reviewed'],
    call: (c, f) => c.decideEgress(f.projectId, f.id, 'reject'),
  },
  release: {
    roles: HOLDERS,
    party: 'requester',
    states: ['approved', 'released'],
    call: (c, f) => c.releaseEgress(f.projectId, f.id),
  },
  revoke: {
    roles: REVIEWERS,
    party: 'any',
    states: ['released'],
    call: (c, f) => c.revokeEgress(f.projectId, f.id),
  },
};

const ROLE_OF: Record<string, 'pi' | 'data_owner' | 'researcher' | 'reviewer'> = {
  'e.pi': 'pi',
  'e.pi2': 'pi',
  'e.do': 'data_owner',
  'e.res': 'researcher',
  'e.res2': 'researcher',
  'e.rev': 'reviewer',
};

function userFor(actor: Actor, requester: string): string {
  return {
    requester,
    pi: requester === 'e.pi' ? 'e.pi2' : 'e.pi',
    data_owner: 'e.do',
    researcher: 'e.res2',
    reviewer: 'e.rev',
    non_member: 'e.none',
  }[actor];
}

/** What the table predicts, in the documented order of conditions. */
function expected(endpoint: string, actor: Actor, requester: string, state: State): string {
  if (actor === 'non_member') return 'not_a_member';
  const role = ROLE_OF[userFor(actor, requester)]!;
  const isRequester = actor === 'requester';
  let e = EXPECTATIONS[endpoint]!;
  if (endpoint === 'comment' && isRequester) e = { ...e, roles: HOLDERS, party: 'requester' };
  if (!(e.roles as string[]).includes(role)) return 'role_not_allowed';
  if (e.party === 'requester' && !isRequester) return 'not_requester';
  if (e.party === 'reviewer' && isRequester) return 'self_review';
  if (e.party === 'either' && !isRequester && role !== 'pi' && role !== 'data_owner') {
    return 'not_requester';
  }
  if (!e.states.includes(state)) return 'wrong_state';
  return 'allow';
}

let n = 0;
function buildRequest(requester: string, state: State): Fixture {
  const projectId = `eg-${++n}`;
  const stamp = new Date(t.clock.now.getTime()).toISOString();
  kms.projects.create(projectId, 'egress matrix', '', 'e.pi', stamp);
  for (const u of NAMES.filter((x) => x !== 'e.none')) {
    kms.projects.addMember({
      project_id: projectId,
      username: u,
      role: ROLE_OF[u]!,
      valid_from: null,
      valid_until: null,
      added_by: 'e.pi',
      added_at: stamp,
    });
  }
  kms.projects.consent(projectId, 'e.do', stamp);
  const id = store.create(projectId, requester, 'matrix', stamp);
  const fileId = randomBytes(16).toString('hex');
  const f = filing(fileId, requester);
  store.replaceFiles(id, [
    {
      ...f,
      sdc: JSON.stringify(f.sdc),
      keys: f.keys.map((k) => ({
        username: k.username,
        kid: k.wrapped.kid,
        wrapped: JSON.stringify(k.wrapped),
      })),
    },
  ]);
  if (state !== 'draft') {
    store.setState(id, state, stamp, true);
    for (const r of ['e.pi', 'e.pi2', 'e.do'].filter((x) => x !== requester)) {
      store.vote(id, 1, fileId, r, ROLE_OF[r]!, 'approve', stamp);
    }
  }
  return { projectId, id, fileId, requester };
}

beforeAll(async () => {
  t = await startKms();
  kms = t.server.kms;
  store = new EgressStore(kms.db);
  const now = t.clock.now.getTime();
  const stamp = new Date(now).toISOString();
  for (const name of NAMES) {
    kms.people.upsert(name, 'Org', null, stamp);
    kms.people.acceptAgreement(name, t.config.agreementVersion, stamp);
    for (const kind of ['hpc', 'data_awareness', 'tre_rules'] as const) {
      kms.people.recordTraining(
        name,
        kind,
        new Date(now - DAY).toISOString(),
        new Date(now + 100 * DAY).toISOString(),
        'admin',
      );
    }
    const k = fakePublicKey();
    kms.people.addKek(name, k.kid, 'x25519', k.text, stamp);
    kekOf.set(name, k.kid);
  }
});

afterAll(async () => {
  await t.stop();
});

const cells: Array<[string, Actor, State, string]> = [];
for (const endpoint of Object.keys(EXPECTATIONS)) {
  for (const state of STATES) {
    for (const actor of ACTORS) cells.push([endpoint, actor, state, 'e.res']);
    // Filed by the PI: the PI is the requester and may not review; the second PI may.
    cells.push([endpoint, 'requester', state, 'e.pi']);
  }
}

async function outcome(call: Promise<unknown>): Promise<string> {
  return call.then(
    () => 'allow',
    (err: unknown) => {
      if (!(err instanceof KmsClientError)) throw err;
      if (err.status !== 403 && err.status !== 409)
        return `status ${err.status} ${err.code}: ${err.message}`;
      return err.reason ?? `${err.code}: ${err.message}`;
    },
  );
}

describe('egress transitions', () => {
  test.each(cells)(
    '%s as %s, request %s, filed by %s',
    async (endpoint, actor, state, requester) => {
      const f = buildRequest(requester, state);
      const user = userFor(actor, requester);
      const got = await outcome(EXPECTATIONS[endpoint]!.call(t.as(user), f));
      expect(got).toBe(expected(endpoint, actor, requester, state));
    },
  );

  test('a refused transition changes nothing and is audit-logged with its reason', async () => {
    const f = buildRequest('e.pi', 'submitted');
    const before = store.get(f.id);
    await expect(t.as('e.pi').decideEgress(f.projectId, f.id, 'approve')).rejects.toMatchObject({
      status: 403,
      reason: 'self_review',
    });
    await expect(t.as('e.do').decideEgress(f.projectId, f.id, 'approve')).rejects.toMatchObject({
      status: 409,
      reason: 'wrong_state',
    });
    expect(store.get(f.id)).toEqual(before);
    const rows = kms.db
      .prepare('SELECT actor, action, result FROM audit_log WHERE object LIKE ? ORDER BY seq')
      .all(`project:${f.projectId} egress:${f.id} %`);
    expect(rows).toEqual([
      { actor: 'e.pi', action: 'egress.approve', result: 'denied:self_review' },
      { actor: 'e.do', action: 'egress.approve', result: 'denied:wrong_state' },
    ]);
  });

  test('a reviewer who joined after the filing holds no key and cannot vote', async () => {
    const f = buildRequest('e.res', 'submitted');
    const stamp = new Date(t.clock.now.getTime()).toISOString();
    kms.projects.removeMember(f.projectId, 'e.rev');
    kms.projects.addMember({
      project_id: f.projectId,
      username: 'e.rev',
      role: 'data_owner',
      valid_from: null,
      valid_until: null,
      added_by: 'e.pi',
      added_at: stamp,
    });
    kms.projects.consent(f.projectId, 'e.rev', stamp);
    await expect(
      t.as('e.rev').voteEgress(f.projectId, f.id, f.fileId, 'approve'),
    ).rejects.toMatchObject({
      status: 409,
      code: 'no_review_key',
    });
    await expect(
      t.as('e.do').voteEgress(f.projectId, f.id, f.fileId, 'approve'),
    ).resolves.toMatchObject({
      state: 'reviewed',
    });
  });

  test('an unknown request is 404 for members and not_a_member for outsiders', async () => {
    const f = buildRequest('e.res', 'draft');
    await expect(t.as('e.pi').egress(f.projectId, 999999)).rejects.toMatchObject({ status: 404 });
    await expect(t.as('e.none').egress(f.projectId, 999999)).rejects.toMatchObject({
      status: 403,
      reason: 'not_a_member',
    });
  });

  test('removing a member shreds their egress keys; closing the project shreds them all', async () => {
    const f = buildRequest('e.res', 'released');
    const holders = (): string[] =>
      (
        kms.db
          .prepare('SELECT username FROM egress_file_keys WHERE request_id = ? ORDER BY username')
          .all(f.id) as Array<{ username: string }>
      ).map((r) => r.username);
    expect(holders()).toEqual(['e.do', 'e.pi', 'e.pi2', 'e.res']);
    await t.as('e.pi').removeMember(f.projectId, 'e.pi2');
    expect(holders()).toEqual(['e.do', 'e.pi', 'e.res']);
    await t.as('e.pi').closeProject(f.projectId);
    expect(holders()).toEqual([]);
    await expect(t.as('e.res').releaseEgress(f.projectId, f.id)).rejects.toMatchObject({
      status: 403,
      reason: 'project_closed',
    });
  });
});
