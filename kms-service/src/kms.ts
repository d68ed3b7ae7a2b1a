/**
 * The KMS's operations. Each one asks the policy, changes the store and appends to the audit
 * log inside one SQLite transaction, so an acknowledged change always has its audit entry.
 * Nothing here can unwrap a key: records are checked for shape and stored as they came.
 */
import {
  decodePublicKey,
  parseKeyFile,
  parseWrappedKey,
  type PublicKey,
  type WrappedKey,
} from '@tre/crypto';
import type { AuditLog } from './audit.js';
import type { Db } from './db.js';
import { badRequest, conflict, KmsError, notFound } from './errors.js';
import {
  decide,
  type Action,
  type EgressState,
  type ProjectFacts,
  type Role,
  type Subject,
  type TrainingKind,
} from './policy.js';
import { EgressStore } from './store/egress.js';
import { FileStore, type FileRow } from './store/files.js';
import { KeyStore } from './store/keys.js';
import { NotificationStore, type NotificationKind } from './store/notifications.js';
import { ProjectStore, type MemberRow, type ProjectRow } from './store/projects.js';
import { PeopleStore } from './store/people.js';
import {
  authPublicKeyObject,
  RECOVERY_MAX_SKEW_MS,
  recoveryAuthKid,
  verifyRecoveryRequest,
} from './recovery.js';
import { VaultStore, type RecoveryRow } from './store/vault.js';

/** Who is asking, as the hub says. */
export interface HubUser {
  name: string;
  admin: boolean;
  /** A trusted hub service (e.g. the ingress), not a person; audit entries name it `service:<name>`. */
  service?: boolean;
}

/** What a session's filesystem (trefs) reports, batched. */
export interface FsEvent {
  op: 'open' | 'create' | 'rename' | 'unlink';
  path: string;
  /** The new path of a rename. */
  to?: string;
  pid: number;
  exe: string;
  time: string;
}

export type FileState = 'pending' | 'visible' | 'destroyed';

export interface KmsOptions {
  agreementVersion: string;
  now?: () => Date;
  /** Called with each policy decision, for metrics. */
  onDecision?: (action: Action, result: string) => void;
  /** Time between a recovery request and the first trustee approval (admins may cancel). */
  recoveryDelayMs?: number;
}

const KEY_HOLDER_ROLES: readonly Role[] = ['pi', 'researcher', 'data_owner'];
const STREAM_PAGE = 5000;

export function wrappedJson(rec: unknown, what: string): { rec: WrappedKey; json: string } {
  let parsed: WrappedKey;
  try {
    parsed = parseWrappedKey(rec);
  } catch (e) {
    throw badRequest('invalid_wrapped_key', `${what}: ${(e as Error).message}`);
  }
  return { rec: parsed, json: JSON.stringify(parsed) };
}

function publicKeyOf(text: string, what: string): PublicKey {
  try {
    return decodePublicKey(text);
  } catch (e) {
    throw badRequest('invalid_public_key', `${what}: ${(e as Error).message}`);
  }
}

function iso(text: string | null | undefined, what: string): string | null {
  if (text === undefined || text === null) return null;
  const t = Date.parse(text);
  if (Number.isNaN(t)) throw badRequest('invalid_time', `${what} is not a date-time`);
  return new Date(t).toISOString();
}

interface Authorized {
  subject: Subject;
  project?: ProjectRow;
  member?: MemberRow;
}

export class Kms {
  readonly people: PeopleStore;
  readonly projects: ProjectStore;
  readonly keys: KeyStore;
  readonly files: FileStore;
  readonly egress: EgressStore;
  readonly vault: VaultStore;
  readonly notifications: NotificationStore;
  readonly agreementVersion: string;
  readonly now: () => Date;
  private readonly onDecision: (action: Action, result: string) => void;
  readonly recoveryDelayMs: number;

  constructor(
    readonly db: Db,
    readonly audit: AuditLog,
    opts: KmsOptions,
  ) {
    this.people = new PeopleStore(db);
    this.projects = new ProjectStore(db);
    this.keys = new KeyStore(db);
    this.files = new FileStore(db);
    this.egress = new EgressStore(db);
    this.vault = new VaultStore(db);
    this.notifications = new NotificationStore(db);
    this.agreementVersion = opts.agreementVersion;
    this.now = opts.now ?? (() => new Date());
    this.onDecision = opts.onDecision ?? (() => undefined);
    this.recoveryDelayMs = opts.recoveryDelayMs ?? 86_400_000;
    // IMMEDIATE: with several serving processes, a deferred transaction that reads (the audit
    // head) and then writes could fail to upgrade its lock; taking the write lock first waits.
    this.runTx = db.transaction((fn: () => unknown) => fn()).immediate;
  }

  private stamp(): string {
    return this.now().toISOString();
  }

  /** One reusable transaction wrapper: better-sqlite3 builds a new one per db.transaction() call. */
  private readonly runTx: (fn: () => unknown) => unknown;

  private tx<T>(fn: () => T): T {
    return this.runTx(fn) as T;
  }

  /** Runs `fn` in the connection's transaction (for modules beside this one, e.g. egress). */
  transaction<T>(fn: () => T): T {
    return this.tx(fn);
  }

  log(actor: string, action: string, object: string, result = 'ok'): void {
    this.audit.append({ actor, action, object, result });
  }

  /** The audit log's name for who acts: services are kept apart from people of the same name. */
  actor(user: HubUser): string {
    return user.service ? `service:${user.name}` : user.name;
  }

  subject(user: HubUser): Subject {
    if (user.service) return { username: user.name, admin: false, service: true };
    const person = this.people.facts(user.name);
    return person
      ? { username: user.name, admin: user.admin, person }
      : { username: user.name, admin: user.admin };
  }

  /** The policy's view of a project, the asker's membership and the egress request acted on. */
  facts(
    project: ProjectRow,
    member: MemberRow | undefined,
    egress?: { requester: string; state: EgressState },
    consented = this.projects.consented(project.id),
  ): ProjectFacts {
    return {
      closed: project.closed_at !== null,
      consented,
      ...(member
        ? {
            membership: {
              role: member.role,
              validFrom: member.valid_from,
              validUntil: member.valid_until,
            },
          }
        : {}),
      ...(egress ? { egress: { requester: egress.requester, state: egress.state } } : {}),
    };
  }

  /** The policy's answer without logging or throwing: for listings of what a caller may do. */
  wouldAllow(
    subject: Subject,
    action: Action,
    project: ProjectRow,
    member: MemberRow | undefined,
    egress?: { requester: string; state: EgressState },
  ): { allowed: boolean; reason: string | null } {
    const d = decide(action, subject, this.facts(project, member, egress), {
      now: this.now(),
      agreementVersion: this.agreementVersion,
    });
    return d.allow ? { allowed: true, reason: null } : { allowed: false, reason: d.reason };
  }

  /** Asks the policy; a denial is audit-logged and thrown. `egress` names the request acted on. */
  authorize(
    user: HubUser,
    action: Action,
    projectId?: string,
    egress?: { id: number; requester: string; state: EgressState },
  ): Authorized {
    const subject = this.subject(user);
    let project: ProjectRow | undefined;
    let member: MemberRow | undefined;
    let facts: ProjectFacts | null | undefined;
    if (projectId !== undefined) {
      const a = this.projects.access(projectId, user.service ? undefined : user.name);
      project = a?.project;
      member = a?.member;
      facts = a ? this.facts(a.project, a.member, egress, a.consented) : null;
    }
    const d = decide(action, subject, facts, {
      now: this.now(),
      agreementVersion: this.agreementVersion,
    });
    if (!d.allow) {
      this.onDecision(action, d.reason);
      const object =
        projectId === undefined
          ? `person:${user.name}`
          : `project:${projectId}${egress ? ` egress:${egress.id} state:${egress.state}` : ''}`;
      this.tx(() => this.log(this.actor(user), action, object, `denied:${d.reason}`));
      throw new KmsError(d.status, 'forbidden', d.message, d.reason);
    }
    this.onDecision(action, 'allow');
    return { subject, ...(project ? { project } : {}), ...(member ? { member } : {}) };
  }

  // ---- people -------------------------------------------------------------------------------

  me(user: HubUser) {
    this.authorize(user, 'self');
    const p = this.people.get(user.name);
    const kek = p ? this.people.currentKek(user.name) : undefined;
    return {
      username: user.name,
      admin: user.admin,
      registered: p !== undefined,
      organisation: p?.organisation ?? null,
      email: p?.email ?? null,
      trustee: p?.trustee === 1,
      agreement: { accepted: p?.agreement_version ?? null, current: this.agreementVersion },
      trainings: p
        ? this.people.trainings(user.name).map((t) => ({
            kind: t.kind,
            completedAt: t.completed_at,
            expiresAt: t.expires_at,
          }))
        : [],
      kek: kek ? { kid: kek.kid, kem: kek.kem, publicKey: kek.public_key } : null,
    };
  }

  register(user: HubUser, body: { organisation: string; email?: string }) {
    this.authorize(user, 'self');
    this.tx(() => {
      const created = this.people.upsert(
        user.name,
        body.organisation,
        body.email ?? null,
        this.stamp(),
      );
      this.log(
        user.name,
        created ? 'person.register' : 'person.update',
        `person:${user.name} organisation:${body.organisation}`,
      );
    });
    return this.me(user);
  }

  private requirePerson(user: HubUser): void {
    if (!this.people.get(user.name)) {
      throw new KmsError(409, 'not_registered', `${user.name} must register first (PUT /v1/me)`);
    }
  }

  acceptAgreement(user: HubUser, version: string) {
    this.authorize(user, 'self');
    this.requirePerson(user);
    if (version !== this.agreementVersion) {
      throw conflict(
        'agreement_version',
        `the current user agreement is version ${this.agreementVersion}`,
      );
    }
    this.tx(() => {
      this.people.acceptAgreement(user.name, version, this.stamp());
      this.log(user.name, 'agreement.accept', `person:${user.name} version:${version}`);
    });
    return this.me(user);
  }

  addKek(user: HubUser, publicKeyText: string) {
    this.authorize(user, 'self');
    this.requirePerson(user);
    const pk = publicKeyOf(publicKeyText, 'publicKey');
    if (this.people.kek(pk.kid))
      throw conflict('duplicate_key', `key ${pk.kid} is already registered`);
    this.tx(() => {
      this.people.addKek(user.name, pk.kid, pk.kem, publicKeyText, this.stamp());
      this.log(user.name, 'kek.add', `person:${user.name} kid:${pk.kid}`);
    });
    return { kid: pk.kid, kem: pk.kem, publicKey: publicKeyText };
  }

  listKeks(user: HubUser, username: string) {
    this.authorize(user, 'self');
    if (!this.people.get(username)) throw notFound(`person ${username}`);
    return this.people.keks(username).map((k) => ({
      kid: k.kid,
      kem: k.kem,
      publicKey: k.public_key,
      createdAt: k.created_at,
      current: k.retired_at === null,
    }));
  }

  putKeyFile(user: HubUser, content: unknown) {
    this.authorize(user, 'self');
    this.requirePerson(user);
    let kid: string;
    try {
      kid = parseKeyFile(content).kid;
    } catch (e) {
      throw badRequest('invalid_key_file', `key file: ${(e as Error).message}`);
    }
    const kek = this.people.kek(kid);
    if (!kek || kek.username !== user.name) {
      throw conflict('unknown_key', `register the key file's public key ${kid} first`);
    }
    this.tx(() => {
      this.people.putKeyFile(user.name, kid, JSON.stringify(content), this.stamp());
      this.log(user.name, 'keyfile.put', `person:${user.name} kid:${kid}`);
    });
    return { kid };
  }

  getKeyFile(user: HubUser): unknown {
    this.authorize(user, 'self');
    const f = this.people.keyFile(user.name);
    if (!f) throw notFound('key file');
    this.tx(() => this.log(user.name, 'keyfile.release', `person:${user.name} kid:${f.kid}`));
    return JSON.parse(f.content);
  }

  notify(user: HubUser, kind: NotificationKind, message: string) {
    this.authorize(user, 'self');
    const id = this.tx(() => {
      const id = this.notifications.add(user.name, kind, message, this.stamp());
      this.log(user.name, 'notification.file', `notification:${id} kind:${kind}`);
      return id;
    });
    return { id, kind };
  }

  listNotifications(user: HubUser, after: number, limit: number) {
    this.authorize(user, 'admin');
    return this.notifications.list(after, limit).map((n) => ({
      id: n.id,
      username: n.username,
      kind: n.kind,
      message: n.message,
      createdAt: n.created_at,
    }));
  }

  recordTraining(
    user: HubUser,
    username: string,
    kind: TrainingKind,
    body: { completedAt: string; expiresAt: string },
  ) {
    this.authorize(user, 'admin');
    if (!this.people.get(username)) throw notFound(`person ${username}`);
    const completed = iso(body.completedAt, 'completedAt')!;
    const expires = iso(body.expiresAt, 'expiresAt')!;
    if (expires <= completed)
      throw badRequest('invalid_time', 'expiresAt must be after completedAt');
    this.tx(() => {
      this.people.recordTraining(username, kind, completed, expires, user.name);
      this.log(user.name, 'training.record', `person:${username} kind:${kind} expires:${expires}`);
    });
    return { kind, completedAt: completed, expiresAt: expires };
  }

  setTrustee(user: HubUser, username: string, trustee: boolean) {
    this.authorize(user, 'admin');
    if (!this.people.get(username)) throw notFound(`person ${username}`);
    this.tx(() => {
      this.people.setTrustee(username, trustee, this.stamp());
      this.log(user.name, 'trustee.set', `person:${username} trustee:${trustee}`);
    });
    return { username, trustee };
  }

  // ---- projects -----------------------------------------------------------------------------

  projectView(id: string) {
    const p = this.projects.get(id);
    if (!p) throw notFound(`project ${id}`);
    const key = p.epoch > 0 ? this.keys.epoch(id, p.epoch) : undefined;
    return {
      id: p.id,
      title: p.title,
      description: p.description,
      pi: p.pi,
      state: p.closed_at !== null ? 'closed' : this.projects.consented(id) ? 'active' : 'proposed',
      createdAt: p.created_at,
      closedAt: p.closed_at,
      epoch: p.epoch,
      rotationDue: p.rotation_due === 1,
      publicKey: key
        ? { epoch: key.epoch, kid: key.kid, kem: key.kem, publicKey: key.public_key }
        : null,
      members: this.projects.members(id).map((m) => ({
        username: m.username,
        role: m.role,
        validFrom: m.valid_from,
        validUntil: m.valid_until,
        consentedAt: m.consented_at,
      })),
    };
  }

  propose(
    user: HubUser,
    body: { id: string; title: string; description?: string; validUntil?: string },
  ) {
    this.authorize(user, 'project.propose');
    if (this.projects.get(body.id))
      throw conflict('duplicate_project', `project ${body.id} exists`);
    const now = this.stamp();
    const until = iso(body.validUntil, 'validUntil');
    this.tx(() => {
      this.projects.create(body.id, body.title, body.description ?? '', user.name, now);
      this.projects.addMember({
        project_id: body.id,
        username: user.name,
        role: 'pi',
        valid_from: null,
        valid_until: until,
        added_by: user.name,
        added_at: now,
      });
      this.log(user.name, 'project.propose', `project:${body.id}`);
    });
    return this.projectView(body.id);
  }

  getProject(user: HubUser, id: string) {
    this.authorize(user, 'project.read', id);
    return this.projectView(id);
  }

  consent(user: HubUser, id: string) {
    const { member } = this.authorize(user, 'project.consent', id);
    if (member!.consented_at !== null) throw conflict('already_consented', 'consent already given');
    this.tx(() => {
      this.projects.consent(id, user.name, this.stamp());
      const active = this.projects.consented(id);
      this.log(user.name, 'project.consent', `project:${id}${active ? ' state:active' : ''}`);
    });
    return this.projectView(id);
  }

  addMember(
    user: HubUser,
    id: string,
    body: { username: string; role: Role; validFrom?: string; validUntil?: string },
  ) {
    const { project } = this.authorize(user, 'member.add', id);
    if (!this.people.get(body.username)) throw notFound(`person ${body.username}`);
    if (this.projects.member(id, body.username)) {
      throw conflict('already_member', `${body.username} is already a member`);
    }
    const from = iso(body.validFrom, 'validFrom');
    const until = iso(body.validUntil, 'validUntil');
    if (from !== null && until !== null && until <= from) {
      throw badRequest('invalid_time', 'validUntil must be after validFrom');
    }
    const now = this.stamp();
    let grantId: number | undefined;
    this.tx(() => {
      this.projects.addMember({
        project_id: id,
        username: body.username,
        role: body.role,
        valid_from: from,
        valid_until: until,
        added_by: user.name,
        added_at: now,
      });
      this.log(user.name, 'member.add', `project:${id} member:${body.username} role:${body.role}`);
      if (project!.epoch > 0 && KEY_HOLDER_ROLES.includes(body.role)) {
        grantId = this.keys.createGrant(id, body.username, project!.epoch, now);
        this.log(
          user.name,
          'grant.create',
          `project:${id} grant:${grantId} member:${body.username} epoch:${project!.epoch}`,
        );
      }
    });
    return {
      username: body.username,
      role: body.role,
      validFrom: from,
      validUntil: until,
      grantId: grantId ?? null,
    };
  }

  removeMember(user: HubUser, id: string, username: string) {
    this.authorize(user, 'member.remove', id);
    const m = this.projects.member(id, username);
    if (!m) throw notFound(`member ${username}`);
    if (m.role === 'pi' && username === this.projects.get(id)!.pi) {
      throw conflict(
        'cannot_remove_pi',
        'the proposing PI cannot be removed; close the project instead',
      );
    }
    this.tx(() => {
      const wraps = this.keys.deleteWrapsOf(id, username);
      const recips =
        this.files.deleteRecipientsOf(id, username) + this.egress.deleteKeysOf(id, username);
      this.keys.cancelGrants(id, { username });
      this.projects.removeMember(id, username);
      this.projects.markRotationDue(id);
      this.log(
        user.name,
        'member.remove',
        `project:${id} member:${username} shredded:${wraps + recips}`,
      );
    });
    return { rotationDue: true };
  }

  closeProject(user: HubUser, id: string) {
    this.authorize(user, 'project.close', id);
    const shredded = this.tx(() => {
      const n = this.keys.shred(id) + this.files.shred(id) + this.egress.shred(id);
      this.keys.cancelGrants(id, {});
      this.projects.close(id, this.stamp());
      this.log(user.name, 'project.close', `project:${id} shredded:${n}`);
      return n;
    });
    // Old page images of the shredded rows may still sit in the WAL; fold it into the zeroed file.
    this.db.pragma('wal_checkpoint(TRUNCATE)');
    return { ...this.projectView(id), shredded };
  }

  // ---- project keys and grants --------------------------------------------------------------

  publishEpoch(
    user: HubUser,
    id: string,
    body: {
      epoch: number;
      publicKey: string;
      volumeKey?: unknown;
      previous?: unknown;
      wraps: Array<{ username: string; wrapped: unknown }>;
    },
  ) {
    const { project } = this.authorize(user, 'epoch.publish', id);
    const p = project!;
    if (body.epoch !== p.epoch + 1) {
      throw conflict('epoch', `the next epoch of ${id} is ${p.epoch + 1}`);
    }
    const pk = publicKeyOf(body.publicKey, 'publicKey');
    if (p.epoch === 0 && body.volumeKey === undefined) {
      throw badRequest('volume_key_required', 'the first epoch needs the wrapped volume key');
    }
    if (p.epoch > 0 && body.previous === undefined) {
      throw badRequest(
        'previous_required',
        `a rotation needs epoch ${p.epoch}'s private key wrapped to the new key (previous)`,
      );
    }
    const volume = body.volumeKey === undefined ? null : wrappedJson(body.volumeKey, 'volumeKey');
    const previous = body.previous === undefined ? null : wrappedJson(body.previous, 'previous');
    for (const r of [volume, previous]) {
      if (r && r.rec.kid !== pk.kid) {
        throw badRequest(
          'wrong_recipient',
          'volumeKey and previous must be wrapped to the new project key',
        );
      }
    }
    const wraps = body.wraps.map((w, i) => {
      const m = this.projects.member(id, w.username);
      if (!m || !KEY_HOLDER_ROLES.includes(m.role)) {
        throw badRequest(
          'not_a_key_holder',
          `wraps[${i}]: ${w.username} is not a key-holding member`,
        );
      }
      const { rec, json } = wrappedJson(w.wrapped, `wraps[${i}]`);
      this.checkKekRecipient(w.username, rec, `wraps[${i}]`);
      return { username: w.username, kid: rec.kid, json };
    });
    if (new Set(wraps.map((w) => w.username)).size !== wraps.length) {
      throw badRequest('duplicate_member', 'each member may appear once in wraps');
    }
    const now = this.stamp();
    const epoch = body.epoch;
    this.tx(() => {
      this.keys.addEpoch({
        project_id: id,
        epoch,
        kem: pk.kem,
        kid: pk.kid,
        public_key: body.publicKey,
        volume_wrapped: volume?.json ?? null,
        previous_wrapped: previous?.json ?? null,
        created_by: user.name,
        created_at: now,
      });
      this.projects.setEpoch(id, epoch);
      this.keys.cancelGrants(id, { beforeEpoch: epoch });
      this.log(user.name, 'epoch.publish', `project:${id} epoch:${epoch} kid:${pk.kid}`);
      for (const w of wraps) {
        this.keys.putWrap(id, epoch, w.username, w.kid, w.json, user.name, now);
        this.log(
          user.name,
          'grant.wrap',
          `project:${id} epoch:${epoch} member:${w.username} kek:${w.kid}`,
        );
      }
      const wrapped = new Set(wraps.map((w) => w.username));
      for (const m of this.projects.members(id)) {
        if (!KEY_HOLDER_ROLES.includes(m.role) || wrapped.has(m.username)) continue;
        const g = this.keys.createGrant(id, m.username, epoch, now);
        this.log(
          user.name,
          'grant.create',
          `project:${id} grant:${g} member:${m.username} epoch:${epoch}`,
        );
      }
    });
    return this.projectView(id);
  }

  checkKekRecipient(username: string, rec: WrappedKey, what: string): void {
    const kek = this.people.currentKek(username);
    if (!kek) throw conflict('no_kek', `${what}: ${username} has no registered key`);
    if (kek.kid !== rec.kid) {
      throw badRequest(
        'wrong_recipient',
        `${what}: must be wrapped to ${username}'s current key ${kek.kid}`,
      );
    }
  }

  releaseProjectKey(user: HubUser, id: string, epochParam?: number) {
    const { project } = this.authorize(user, 'project_key.release', id);
    const p = project!;
    const epoch = epochParam ?? p.epoch;
    const key = epoch > 0 ? this.keys.epoch(id, epoch) : undefined;
    if (!key) throw notFound(`epoch ${epoch} of project ${id}`);
    const newest = this.keys.newestWrappedEpoch(id, user.name);
    if (newest === undefined || newest < epoch) {
      this.tx(() =>
        this.log(
          user.name,
          'project_key.release',
          `project:${id} epoch:${epoch}`,
          'denied:no_grant',
        ),
      );
      throw new KmsError(
        404,
        'no_grant',
        `no project key of epoch ${epoch} is wrapped for ${user.name}; a pending grant awaits a key holder`,
      );
    }
    const mine = this.keys.wrap(id, epoch, user.name);
    this.tx(() => this.log(user.name, 'project_key.release', `project:${id} epoch:${epoch}`));
    return {
      projectId: id,
      epoch,
      kem: key.kem,
      kid: key.kid,
      publicKey: key.public_key,
      wrapped: mine ? (JSON.parse(mine.wrapped) as WrappedKey) : null,
      volumeKey: key.volume_wrapped ? (JSON.parse(key.volume_wrapped) as WrappedKey) : null,
      previous: key.previous_wrapped ? (JSON.parse(key.previous_wrapped) as WrappedKey) : null,
    };
  }

  listGrants(user: HubUser, id: string) {
    this.authorize(user, 'grant.list', id);
    return this.keys.pendingGrants(id).map((g) => {
      const kek = this.people.currentKek(g.username);
      const m = this.projects.member(id, g.username);
      return {
        id: g.id,
        username: g.username,
        role: m?.role ?? null,
        epoch: g.epoch,
        createdAt: g.created_at,
        kek: kek ? { kid: kek.kid, kem: kek.kem, publicKey: kek.public_key } : null,
      };
    });
  }

  completeGrant(user: HubUser, id: string, grantId: number, wrappedRec: unknown) {
    this.authorize(user, 'grant.complete', id);
    const g = this.keys.grant(id, grantId);
    if (!g) throw notFound(`grant ${grantId}`);
    if (g.state !== 'pending')
      throw conflict('grant_not_pending', `grant ${grantId} is ${g.state}`);
    const { rec, json } = wrappedJson(wrappedRec, 'wrapped');
    this.checkKekRecipient(g.username, rec, 'wrapped');
    this.tx(() => {
      this.keys.putWrap(id, g.epoch, g.username, rec.kid, json, user.name, this.stamp());
      this.keys.completeGrant(g.id, user.name, this.stamp());
      this.log(
        user.name,
        'grant.complete',
        `project:${id} grant:${g.id} member:${g.username} epoch:${g.epoch} kek:${rec.kid}`,
      );
    });
    return { id: g.id, state: 'completed' as const };
  }

  // ---- files --------------------------------------------------------------------------------

  registerFiles(
    user: HubUser,
    id: string,
    files: Array<{ fileId: string; size: number; sha256: string; epoch: number; wrapped: unknown }>,
    state: 'pending' | 'visible' = 'visible',
  ) {
    const { project } = this.authorize(user, 'file.register', id);
    const p = project!;
    const key = p.epoch > 0 ? this.keys.epoch(id, p.epoch) : undefined;
    if (!key) throw conflict('no_project_key', `project ${id} has no key yet`);
    const rows = files.map((f, i) => {
      if (f.epoch !== p.epoch) {
        throw conflict(
          'epoch',
          `files[${i}]: new files must be wrapped to the current epoch ${p.epoch}`,
        );
      }
      const { rec, json } = wrappedJson(f.wrapped, `files[${i}].wrapped`);
      if (rec.kid !== key.kid) {
        throw badRequest(
          'wrong_recipient',
          `files[${i}]: must be wrapped to the project key ${key.kid}`,
        );
      }
      return {
        file_id: f.fileId.toLowerCase(),
        epoch: f.epoch,
        size: f.size,
        sha256: f.sha256.toLowerCase(),
        wrapped: json,
        state,
      };
    });
    if (new Set(rows.map((r) => r.file_id)).size !== rows.length) {
      throw badRequest('duplicate_file', 'a file id appears twice');
    }
    const now = this.stamp();
    this.tx(() => {
      for (const r of rows) {
        if (this.files.get(r.file_id))
          throw conflict('duplicate_file', `file ${r.file_id} is already registered`);
        this.files.insert(r, id, user.name, now);
      }
      this.log(
        user.name,
        'file.register',
        `project:${id} epoch:${p.epoch} files:${rows.length} first:${rows[0]!.file_id}${state === 'pending' ? ' state:pending' : ''}`,
      );
    });
    return { registered: rows.length, state };
  }

  private projectFile(id: string, fileId: string) {
    const f = this.files.get(fileId.toLowerCase());
    if (!f || f.project_id !== id) throw notFound(`file ${fileId}`);
    return f;
  }

  /** No key of a file the ingress has not confirmed leaves the KMS, by any endpoint. */
  private refusePending(user: HubUser, action: string, id: string, f: FileRow): void {
    if (f.state !== 'pending') return;
    this.tx(() =>
      this.log(user.name, action, `project:${id} file:${f.file_id}`, 'denied:file_pending'),
    );
    throw conflict('file_pending', `file ${f.file_id} awaits confirmation of its ingress`);
  }

  /**
   * The hottest endpoint. Resolves to the response body as JSON text, once the release's audit
   * entry is committed (group commit). The stored wrapped key is JSON the KMS itself wrote after
   * parsing it, so it is spliced in as it is rather than parsed and serialised again.
   */
  async releaseFileKey(user: HubUser, id: string, fileId: string): Promise<string> {
    this.authorize(user, 'file_key.release', id);
    const f = this.projectFile(id, fileId);
    this.refusePending(user, 'file_key.release', id, f);
    if (f.wrapped === null) throw notFound(`key of file ${fileId}`);
    await this.audit.appendCommitted({
      actor: user.name,
      action: 'file_key.release',
      object: `project:${id} file:${f.file_id}`,
      result: 'ok',
    });
    return `{"fileId":${JSON.stringify(f.file_id)},"epoch":${f.epoch},"size":${f.size},"sha256":${JSON.stringify(f.sha256)},"wrapped":${f.wrapped}}`;
  }

  /**
   * Authorizes and logs a batch release, then yields NDJSON chunks page by page. Keyset
   * pagination holds no cursor across the caller's awaits, so other requests keep the connection.
   */
  streamFileKeys(user: HubUser, id: string): { count: number; chunks: Generator<string> } {
    this.authorize(user, 'file_key.release', id);
    const count = this.files.countWrapped(id);
    this.tx(() => this.log(user.name, 'file_key.release_batch', `project:${id} files:${count}`));
    const files = this.files;
    function* chunks(): Generator<string> {
      let after = '';
      for (;;) {
        const page = files.page(id, after, STREAM_PAGE);
        if (page.length === 0) return;
        let out = '';
        for (const r of page) {
          out += `{"fileId":"${r.file_id}","epoch":${r.epoch},"wrapped":${r.wrapped}}\n`;
        }
        after = page[page.length - 1]!.file_id;
        yield out;
      }
    }
    return { count, chunks: chunks() };
  }

  addRecipient(
    user: HubUser,
    id: string,
    fileId: string,
    body: { username: string; purpose: string; wrapped: unknown },
  ) {
    this.authorize(user, 'file.add_recipient', id);
    const f = this.projectFile(id, fileId);
    const m = this.projects.member(id, body.username);
    if (!m) throw badRequest('not_a_member', `${body.username} is not a member of ${id}`);
    const { rec, json } = wrappedJson(body.wrapped, 'wrapped');
    this.checkKekRecipient(body.username, rec, 'wrapped');
    this.tx(() => {
      this.files.addRecipient(
        f.file_id,
        body.username,
        rec.kid,
        body.purpose,
        json,
        user.name,
        this.stamp(),
      );
      this.log(
        user.name,
        'file.add_recipient',
        `project:${id} file:${f.file_id} recipient:${body.username} purpose:${body.purpose}`,
      );
    });
    return { fileId: f.file_id, username: body.username };
  }

  releaseReviewKey(user: HubUser, id: string, fileId: string) {
    this.authorize(user, 'review_key.release', id);
    const f = this.projectFile(id, fileId);
    this.refusePending(user, 'review_key.release', id, f);
    const r = this.files.recipient(f.file_id, user.name);
    if (!r) throw notFound(`review key of file ${fileId} for ${user.name}`);
    this.tx(() => this.log(user.name, 'review_key.release', `project:${id} file:${f.file_id}`));
    return { fileId: f.file_id, purpose: r.purpose, wrapped: JSON.parse(r.wrapped) as WrappedKey };
  }

  private projectFiles(id: string, fileIds: readonly string[]): FileRow[] {
    const ids = fileIds.map((f) => f.toLowerCase());
    if (new Set(ids).size !== ids.length)
      throw badRequest('duplicate_file', 'a file id appears twice');
    return ids.map((f) => this.projectFile(id, f));
  }

  /** The ingress confirmed these staged files: their DEKs become releasable. Idempotent. */
  confirmFiles(user: HubUser, id: string, fileIds: readonly string[]) {
    this.authorize(user, 'file.confirm', id);
    const files = this.projectFiles(id, fileIds);
    const gone = files.find((f) => f.state === 'destroyed');
    if (gone) throw conflict('file_destroyed', `the key of file ${gone.file_id} was destroyed`);
    const pending = files.filter((f) => f.state === 'pending');
    const actor = this.actor(user);
    this.tx(() => {
      for (const f of pending) {
        this.files.confirm(f.file_id);
        this.log(actor, 'file.confirm', `project:${id} file:${f.file_id} state:visible`);
      }
    });
    return { confirmed: pending.length, alreadyVisible: files.length - pending.length };
  }

  /**
   * Destroys files' wrapped DEKs (ingress rejection). A service may destroy only files still
   * pending; a hub admin any. secure_delete plus a WAL checkpoint overwrite the bytes.
   */
  destroyFiles(user: HubUser, id: string, fileIds: readonly string[]) {
    this.authorize(user, 'file.destroy', id);
    const files = this.projectFiles(id, fileIds);
    if (user.service) {
      const visible = files.find((f) => f.state === 'visible');
      if (visible) {
        throw conflict('not_pending', `file ${visible.file_id} was confirmed; ask a hub admin`);
      }
    }
    const live = files.filter((f) => f.state !== 'destroyed');
    const actor = this.actor(user);
    const shredded = this.tx(() => {
      let n = 0;
      for (const f of live) {
        const k = this.files.destroy(f.file_id);
        n += k;
        this.log(
          actor,
          'file.destroy',
          `project:${id} file:${f.file_id} from:${f.state} state:destroyed shredded:${k}`,
        );
      }
      return n;
    });
    if (live.length > 0) this.db.pragma('wal_checkpoint(TRUNCATE)');
    return { destroyed: live.length, alreadyDestroyed: files.length - live.length, shredded };
  }

  // ---- what a caller may do ----------------------------------------------------------------

  /**
   * The caller's projects, each with what the JupyterLab picker and the spawner's form need:
   * role, state, consent, window, epoch, whether a key is wrapped to the caller's current KEK,
   * the policy's answer for a key release, and the grants the caller could complete.
   */
  myProjects(user: HubUser) {
    const { subject } = this.authorize(user, 'self');
    const kek = this.people.currentKek(user.name);
    const now = this.now().getTime();
    const list = this.projects.membershipsOf(user.name).map(({ project: p, member: m }) => {
      const members = this.projects.members(p.id);
      const owners = members.filter((x) => x.role === 'data_owner');
      const consented = owners.length > 0 && owners.every((o) => o.consented_at !== null);
      const wrap = p.epoch > 0 ? this.keys.wrap(p.id, p.epoch, user.name) : undefined;
      const canGrant =
        wrap !== undefined && this.wouldAllow(subject, 'grant.complete', p, m).allowed;
      const pending = this.keys.pendingGrants(p.id);
      const mine = pending.find((g) => g.username === user.name);
      const from = m.valid_from === null ? -Infinity : Date.parse(m.valid_from);
      const until = m.valid_until === null ? Infinity : Date.parse(m.valid_until);
      return {
        id: p.id,
        title: p.title,
        pi: p.pi,
        role: m.role,
        roles: [m.role],
        state: p.closed_at !== null ? 'closed' : consented ? 'active' : 'proposed',
        consent: {
          complete: consented,
          dataOwners: owners.map((o) => ({ username: o.username, consentedAt: o.consented_at })),
        },
        window: {
          validFrom: m.valid_from,
          validUntil: m.valid_until,
          open: from <= now && now < until,
        },
        epoch: p.epoch,
        rotationDue: p.rotation_due === 1,
        keyWrapped: wrap !== undefined && kek !== undefined && wrap.kek_kid === kek.kid,
        keyRelease: this.wouldAllow(subject, 'project_key.release', p, m),
        awaitingGrant: mine ? { id: mine.id, epoch: mine.epoch } : null,
        grantsToComplete: canGrant
          ? pending
              .filter((g) => g.username !== user.name && g.epoch === p.epoch)
              .map((g) => {
                const k = this.people.currentKek(g.username);
                return {
                  id: g.id,
                  username: g.username,
                  role: members.find((x) => x.username === g.username)?.role ?? null,
                  epoch: g.epoch,
                  createdAt: g.created_at,
                  kek: k ? { kid: k.kid, kem: k.kem, publicKey: k.public_key } : null,
                };
              })
          : [],
      };
    });
    this.tx(() =>
      this.log(user.name, 'me.projects', `person:${user.name} projects:${list.length}`),
    );
    return list;
  }

  // ---- audit events from the TRE's other parts ----------------------------------------------

  /**
   * A session's filesystem events (from trefs), one audit entry each, in one transaction. The
   * path is stored as given: an audit trail that cannot say which file was opened cannot answer
   * an investigation, and names inside a project are the same metadata the KMS already keeps
   * for egress manifests; the log is readable by hub admins only.
   */
  appendFsEvents(user: HubUser, id: string, events: readonly FsEvent[], session?: string) {
    this.authorize(user, 'audit.fs_events', id);
    const seq = this.tx(() => {
      for (const e of events) {
        const to = e.to === undefined ? '' : ` to:${JSON.stringify(e.to)}`;
        this.log(
          user.name,
          `fs.${e.op}`,
          `project:${id} path:${JSON.stringify(e.path)}${to} pid:${e.pid} exe:${JSON.stringify(e.exe)} at:${iso(e.time, 'time')!}${session ? ` session:${session}` : ''}`,
        );
      }
      return this.audit.head().seq;
    });
    return { appended: events.length, seq };
  }

  /** A trusted service's own audit events (e.g. the ingress workflow), under `service:<name>`. */
  appendAuditEvents(
    user: HubUser,
    events: ReadonlyArray<{ action: string; object: string; result?: string; user?: string }>,
  ) {
    this.authorize(user, 'audit.append');
    const actor = this.actor(user);
    const seq = this.tx(() => {
      for (const e of events) {
        this.log(
          actor,
          e.action,
          e.user ? `${e.object} user:${e.user}` : e.object,
          e.result ?? 'ok',
        );
      }
      return this.audit.head().seq;
    });
    return { appended: events.length, seq };
  }

  // ---- vault --------------------------------------------------------------------------------

  putVault(
    user: HubUser,
    body: {
      threshold: number;
      shares: Array<{ trustee: string; wrapped: unknown }>;
      recoveryAuthKey: string;
    },
  ) {
    this.authorize(user, 'self');
    this.requirePerson(user);
    const kek = this.people.currentKek(user.name);
    if (!kek) throw conflict('no_kek', 'register a key before creating its vault');
    try {
      authPublicKeyObject(body.recoveryAuthKey);
    } catch (e) {
      throw badRequest('invalid_recovery_auth_key', `recoveryAuthKey: ${(e as Error).message}`);
    }
    const n = body.shares.length;
    if (body.threshold > n)
      throw badRequest('invalid_threshold', `threshold ${body.threshold} exceeds ${n} shares`);
    const shares = body.shares.map((s, i) => {
      if (s.trustee === user.name)
        throw badRequest('self_trustee', 'a user cannot be their own trustee');
      if (this.people.get(s.trustee)?.trustee !== 1) {
        throw badRequest('not_a_trustee', `shares[${i}]: ${s.trustee} is not a trustee`);
      }
      const { rec, json } = wrappedJson(s.wrapped, `shares[${i}]`);
      this.checkKekRecipient(s.trustee, rec, `shares[${i}]`);
      return { trustee: s.trustee, wrapped: json };
    });
    if (new Set(shares.map((s) => s.trustee)).size !== n) {
      throw badRequest('duplicate_trustee', 'each trustee may hold one share');
    }
    this.tx(() => {
      this.vault.put(
        user.name,
        kek.kid,
        body.threshold,
        shares,
        body.recoveryAuthKey,
        this.stamp(),
      );
      this.log(
        user.name,
        'vault.put',
        `person:${user.name} kid:${kek.kid} threshold:${body.threshold} shares:${n} auth:${recoveryAuthKid(body.recoveryAuthKey)}`,
      );
    });
    return this.getVault(user);
  }

  getVault(user: HubUser) {
    this.authorize(user, 'self');
    const v = this.vault.get(user.name);
    if (!v) throw notFound('vault');
    return {
      kid: v.kid,
      threshold: v.threshold,
      shares: v.share_count,
      trustees: this.vault.trustees(user.name),
      createdAt: v.created_at,
      recoveryAuthKid: v.auth_key === null ? null : recoveryAuthKid(v.auth_key),
    };
  }

  /** A refused recovery request: audit-logged with its reason, then thrown. */
  private refuseRecovery(user: HubUser, reason: string, message: string): never {
    this.tx(() =>
      this.log(user.name, 'recovery.request', `person:${user.name}`, `denied:${reason}`),
    );
    throw new KmsError(403, 'forbidden', message, reason);
  }

  /**
   * Opens a recovery only for a request signed with the vault's recovery-authentication key
   * (see recovery.ts). It waits `recoveryDelayMs` before trustees see it; admins are notified
   * and may cancel meanwhile, and the owner sees it in their list of recoveries.
   */
  requestRecovery(
    user: HubUser,
    body: { recoveryPublicKey: string; requestedAt: string; signature: string },
  ) {
    this.authorize(user, 'self');
    const v = this.vault.get(user.name);
    if (!v) throw notFound('vault');
    const pk = publicKeyOf(body.recoveryPublicKey, 'recoveryPublicKey');
    if (v.auth_key === null) {
      this.refuseRecovery(
        user,
        'no_recovery_auth_key',
        'this vault has no recovery-authentication key: store the vault again with one',
      );
    }
    const fields = {
      username: user.name,
      vaultKid: v.kid,
      authKid: recoveryAuthKid(v.auth_key),
      recoveryPublicKey: body.recoveryPublicKey,
      requestedAt: body.requestedAt,
    };
    if (!verifyRecoveryRequest(v.auth_key, fields, body.signature)) {
      this.refuseRecovery(
        user,
        'bad_recovery_signature',
        "the request is not signed with the vault's recovery-authentication key",
      );
    }
    const at = Date.parse(body.requestedAt);
    const now = this.now().getTime();
    if (Number.isNaN(at) || Math.abs(now - at) > RECOVERY_MAX_SKEW_MS) {
      this.refuseRecovery(
        user,
        'stale_recovery_request',
        `requestedAt must be within ${RECOVERY_MAX_SKEW_MS / 60_000} minutes of the KMS's clock`,
      );
    }
    const notBefore = new Date(now + this.recoveryDelayMs).toISOString();
    const id = this.tx(() => {
      const id = this.vault.openRecovery(user.name, { ...body, notBefore }, this.stamp());
      this.notifications.add(
        user.name,
        'recovery_requested',
        `recovery ${id} of ${user.name}'s vault was requested; trustees can approve from ${notBefore} unless an admin cancels it`,
        this.stamp(),
      );
      this.log(
        user.name,
        'recovery.request',
        `person:${user.name} recovery:${id} kid:${pk.kid} not_before:${notBefore}`,
      );
      return id;
    });
    return this.getRecovery(user, id);
  }

  /** open and still inside its waiting period reads as `waiting`. */
  private recoveryState(r: RecoveryRow): 'waiting' | 'open' | 'ready' | 'cancelled' {
    if (r.state === 'open' && r.not_before !== null && this.stamp() < r.not_before)
      return 'waiting';
    return r.state;
  }

  listRecoveries(user: HubUser) {
    this.authorize(user, 'self');
    return this.vault.recoveriesOf(user.name).map((r) => ({
      id: r.id,
      state: this.recoveryState(r),
      createdAt: r.created_at,
      notBefore: r.not_before,
      cancelledBy: r.cancelled_by,
    }));
  }

  cancelRecovery(user: HubUser, rid: number) {
    this.authorize(user, 'admin');
    const r = this.vault.recovery(rid);
    if (!r) throw notFound(`recovery ${rid}`);
    if (r.state !== 'open') throw conflict('recovery_not_open', `recovery ${rid} is ${r.state}`);
    this.tx(() => {
      this.vault.cancel(rid, user.name);
      this.log(user.name, 'recovery.cancel', `person:${r.username} recovery:${rid}`);
    });
    return { id: rid, state: 'cancelled' as const, cancelledBy: user.name };
  }

  getRecovery(user: HubUser, rid: number) {
    this.authorize(user, 'self');
    const r = this.vault.recovery(rid);
    if (!r || r.username !== user.name) throw notFound(`recovery ${rid}`);
    const v = this.vault.get(user.name)!;
    const approvals = this.vault.approvals(rid);
    const ready = r.state === 'ready';
    if (ready)
      this.tx(() =>
        this.log(
          user.name,
          'recovery.release',
          `person:${user.name} recovery:${rid} shares:${approvals.length}`,
        ),
      );
    return {
      id: r.id,
      state: this.recoveryState(r),
      notBefore: r.not_before,
      threshold: v.threshold,
      approvals: approvals.length,
      shares: ready
        ? approvals.map((a) => ({
            trustee: a.trustee,
            wrapped: JSON.parse(a.wrapped) as WrappedKey,
          }))
        : [],
    };
  }

  trusteeRecoveries(user: HubUser) {
    this.authorize(user, 'trustee');
    const list = this.vault.awaiting(user.name, this.stamp());
    if (list.length > 0) {
      this.tx(() => {
        for (const r of list)
          this.log(user.name, 'vault_share.release', `person:${r.username} recovery:${r.id}`);
      });
    }
    return list.map((r) => ({
      id: r.id,
      username: r.username,
      recoveryPublicKey: r.recovery_public_key,
      createdAt: r.created_at,
      share: JSON.parse(r.share) as WrappedKey,
      // What the trustee's client checks before re-encrypting (verifyRecoveryRequest).
      vaultKid: r.kid,
      recoveryAuthKey: r.auth_key,
      requestedAt: r.requested_at!,
      signature: r.signature!,
    }));
  }

  approveRecovery(user: HubUser, rid: number, wrappedRec: unknown) {
    this.authorize(user, 'trustee');
    const r = this.vault.recovery(rid);
    const share = r ? this.vault.share(r.username, user.name) : undefined;
    if (!r || !share) throw notFound(`recovery ${rid}`);
    if (r.state !== 'open') throw conflict('recovery_not_open', `recovery ${rid} is ${r.state}`);
    if (this.recoveryState(r) === 'waiting') {
      this.tx(() =>
        this.log(
          user.name,
          'recovery.approve',
          `person:${r.username} recovery:${rid}`,
          'denied:recovery_waiting',
        ),
      );
      throw new KmsError(
        409,
        'recovery_waiting',
        `recovery ${rid} can be approved from ${r.not_before}`,
        'recovery_waiting',
      );
    }
    const { rec, json } = wrappedJson(wrappedRec, 'wrapped');
    if (rec.kid !== publicKeyOf(r.recovery_public_key, 'recovery key').kid) {
      throw badRequest('wrong_recipient', 'the share must be wrapped to the recovery key');
    }
    if (this.vault.approvals(rid).some((a) => a.trustee === user.name)) {
      throw conflict('already_approved', `${user.name} already approved recovery ${rid}`);
    }
    const v = this.vault.get(r.username)!;
    const count = this.tx(() => {
      const count = this.vault.approve(rid, user.name, json, this.stamp());
      this.log(
        user.name,
        'recovery.approve',
        `person:${r.username} recovery:${rid} approvals:${count}/${v.threshold}`,
      );
      if (count >= v.threshold) {
        this.vault.markReady(rid);
        this.log(user.name, 'recovery.ready', `person:${r.username} recovery:${rid}`);
      }
      return count;
    });
    return { id: rid, approvals: count, threshold: v.threshold };
  }

  // ---- audit --------------------------------------------------------------------------------

  authorizeAuditExport(user: HubUser): void {
    this.authorize(user, 'admin');
    this.tx(() => this.log(user.name, 'audit.export', `audit:${this.audit.head().seq}`));
  }
}
