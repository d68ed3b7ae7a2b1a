/**
 * The egress (Safe Outputs) workflow. A requester files the files of the export folder: the
 * manifest (path, size, ciphertext SHA-256) is frozen, each file's DEK arrives wrapped to every
 * reviewer's KEK and to the requester's, and the disclosure-check record computed inside the TRE
 * rides along. The PI and the data owner (never the requester) vote per file; after both have,
 * one of them approves, rejects or returns the request. Only the requester obtains the release.
 *
 * Every transition asks the policy (its egress rules name party and state), changes the store and
 * appends its audit entry in one transaction, like every other KMS operation.
 */
import type { WrappedKey } from '@tre/crypto';
import { badRequest, conflict, KmsError, notFound } from './errors.js';
import { wrappedJson, type HubUser, type Kms } from './kms.js';
import {
  EGRESS_REVIEWER_ROLES,
  IN_REVIEW,
  type EgressAction,
  type EgressState,
  type Role,
} from './policy.js';
import type { EgressFileRow, EgressRow, EgressStore } from './store/egress.js';
import { ACRO_DEFAULTS, type FileCheck, type SdcParameters, type Verdict } from './sdc/check.js';

export interface EgressFileInput {
  fileId: string;
  path: string;
  size: number;
  sha256: string;
  sdc: FileCheck;
  keys: Array<{ username: string; wrapped: unknown }>;
}

const RANK: Record<Verdict, number> = { pass: 0, review: 1, fail: 2 };

/** The record's verdicts must agree with its own cells: a tampered summary is refused. */
function checkRecord(path: string, rec: FileCheck, what: string): void {
  if (rec.path !== path) throw badRequest('invalid_sdc', `${what}: the record is for ${rec.path}`);
  for (const k of Object.keys(ACRO_DEFAULTS) as Array<keyof SdcParameters>) {
    if (rec.parameters[k] !== ACRO_DEFAULTS[k]) {
      throw badRequest(
        'invalid_sdc',
        `${what}: checked with ${k} = ${String(rec.parameters[k])}, the TRE's rule is ${String(ACRO_DEFAULTS[k])}`,
      );
    }
  }
  let worst: Verdict = 'pass';
  const summary: Record<Verdict, number> = { pass: 0, review: 0, fail: 0 };
  for (const [i, c] of rec.cells.entries()) {
    let cw: Verdict = 'pass';
    for (const h of c.hits) if (RANK[h.verdict] > RANK[cw]) cw = h.verdict;
    if (cw !== c.verdict) {
      throw badRequest('invalid_sdc', `${what}: cell ${i} is ${c.verdict} but its rules say ${cw}`);
    }
    summary[cw]++;
    if (RANK[cw] > RANK[worst]) worst = cw;
  }
  for (const h of rec.hits) if (RANK[h.verdict] > RANK[worst]) worst = h.verdict;
  if (worst !== rec.verdict) {
    throw badRequest(
      'invalid_sdc',
      `${what}: the file is ${rec.verdict} but its cells say ${worst}`,
    );
  }
  for (const v of ['pass', 'review', 'fail'] as const) {
    if (rec.summary[v] !== summary[v]) {
      throw badRequest('invalid_sdc', `${what}: summary.${v} does not match the cells`);
    }
  }
}

export class Egress {
  private readonly store: EgressStore;

  constructor(private readonly kms: Kms) {
    this.store = kms.egress;
  }

  private stamp(): string {
    return this.kms.now().toISOString();
  }

  /** Loads the request and asks the policy, with the request's requester and state as facts. */
  private authorize(user: HubUser, action: EgressAction, projectId: string, id: number) {
    const r = this.store.get(id);
    if (!r || r.project_id !== projectId) {
      this.kms.authorize(user, 'egress.list', projectId);
      throw notFound(`egress request ${id}`);
    }
    const a = this.kms.authorize(user, action, projectId, {
      id,
      requester: r.requester,
      state: r.state,
    });
    return { r, role: a.member?.role };
  }

  private transition(
    user: HubUser,
    action: EgressAction,
    r: EgressRow,
    to: EgressState,
    extra = '',
    also?: () => void,
  ): void {
    this.kms.transaction(() => {
      this.store.setState(r.id, to, this.stamp(), to === 'submitted');
      also?.();
      this.kms.log(
        user.name,
        action,
        `project:${r.project_id} egress:${r.id} from:${r.state} state:${to}${extra}`,
      );
    });
  }

  /** Reviewers of a request: every PI and data owner of the project but the requester. */
  reviewers(r: EgressRow): Array<{ username: string; role: Role }> {
    return this.kms.projects
      .members(r.project_id)
      .filter((m) => EGRESS_REVIEWER_ROLES.includes(m.role) && m.username !== r.requester)
      .map((m) => ({ username: m.username, role: m.role }));
  }

  view(id: number, viewer: string) {
    const r = this.store.get(id)!;
    const isRequester = viewer === r.requester;
    const files = this.store.files(id);
    const votes = this.store.votes(id, r.round);
    const justifications = this.store.justifications(id);
    const reviewers = this.reviewers(r).map((rv) => ({
      ...rv,
      done:
        files.length > 0 &&
        files.every((f) =>
          votes.some((v) => v.file_id === f.file_id && v.reviewer === rv.username),
        ),
    }));
    return {
      id: r.id,
      projectId: r.project_id,
      requester: r.requester,
      title: r.title,
      state: r.state,
      round: r.round,
      createdAt: r.created_at,
      updatedAt: r.updated_at,
      reviewers,
      files: files.map((f) => ({
        fileId: f.file_id,
        path: f.path,
        size: f.size,
        sha256: f.sha256,
        sdc: JSON.parse(f.sdc) as FileCheck,
        keyHolders: [...this.store.keyHolders(id, f.file_id).keys()].sort(),
        votes: votes
          .filter((v) => v.file_id === f.file_id)
          .map((v) => ({ reviewer: v.reviewer, role: v.role, vote: v.vote, at: v.created_at })),
        justifications: justifications
          .filter((j) => j.file_id === f.file_id)
          .map((j) => ({ cell: j.cell, rule: j.rule, text: j.text, author: j.author })),
      })),
      comments: this.store
        .comments(id)
        .filter((c) => !isRequester || c.visibility === 'requester')
        .map((c) => ({
          id: c.id,
          round: c.round,
          fileId: c.file_id,
          author: c.author,
          visibility: c.visibility,
          text: c.text,
          createdAt: c.created_at,
        })),
    };
  }

  create(user: HubUser, projectId: string, title: string) {
    this.kms.authorize(user, 'egress.create', projectId);
    const id = this.kms.transaction(() => {
      const id = this.store.create(projectId, user.name, title, this.stamp());
      this.kms.log(user.name, 'egress.create', `project:${projectId} egress:${id} state:draft`);
      return id;
    });
    return this.view(id, user.name);
  }

  list(user: HubUser, projectId: string) {
    const { member } = this.kms.authorize(user, 'egress.list', projectId);
    const reviewer = EGRESS_REVIEWER_ROLES.includes(member!.role);
    return this.store
      .list(projectId)
      .filter((r) => r.requester === user.name || reviewer)
      .map((r) => ({
        id: r.id,
        requester: r.requester,
        title: r.title,
        state: r.state,
        round: r.round,
        updatedAt: r.updated_at,
        mine: r.requester === user.name,
      }));
  }

  /**
   * Every egress request, in any of the caller's projects, on which the caller as a reviewer
   * has something to do now: vote on the files of the current round, or (once reviewed)
   * approve, return or reject. Requests the policy would refuse them (window ended, training
   * expired, ...) are left out.
   */
  myReviews(user: HubUser) {
    const { subject } = this.kms.authorize(user, 'self');
    const out = [];
    for (const { project, member } of this.kms.projects.membershipsOf(user.name)) {
      if (!EGRESS_REVIEWER_ROLES.includes(member.role)) continue;
      for (const r of this.store.list(project.id)) {
        if (r.requester === user.name || !IN_REVIEW.includes(r.state)) continue;
        const facts = { requester: r.requester, state: r.state };
        const files = this.store.files(r.id);
        const votes = this.store.votes(r.id, r.round);
        const voted = files.every((f) =>
          votes.some((v) => v.file_id === f.file_id && v.reviewer === user.name),
        );
        const todo: 'vote' | 'decide' | null = !voted
          ? this.kms.wouldAllow(subject, 'egress.vote', project, member, facts).allowed
            ? 'vote'
            : null
          : r.state === 'reviewed' &&
              this.kms.wouldAllow(subject, 'egress.approve', project, member, facts).allowed
            ? 'decide'
            : null;
        if (!todo) continue;
        out.push({
          projectId: project.id,
          projectTitle: project.title,
          id: r.id,
          title: r.title,
          requester: r.requester,
          state: r.state,
          round: r.round,
          updatedAt: r.updated_at,
          files: files.length,
          todo,
        });
      }
    }
    this.kms.transaction(() =>
      this.kms.log(user.name, 'me.reviews', `person:${user.name} requests:${out.length}`),
    );
    return out;
  }

  get(user: HubUser, projectId: string, id: number) {
    this.authorize(user, 'egress.read', projectId, id);
    return this.view(id, user.name);
  }

  /** Freezes (or, while draft or returned, re-freezes) the manifest with its keys and records. */
  putFiles(user: HubUser, projectId: string, id: number, files: EgressFileInput[]) {
    const { r } = this.authorize(user, 'egress.edit', projectId, id);
    const allowed = new Set([r.requester, ...this.reviewers(r).map((x) => x.username)]);
    const rows = files.map((f, i) => {
      const what = `files[${i}]`;
      if (f.path.split('/').some((seg) => seg === '..' || seg === '.' || seg === '')) {
        throw badRequest('invalid_path', `${what}: path must be relative, without . or ..`);
      }
      checkRecord(f.path, f.sdc, `${what}.sdc`);
      const keys = f.keys.map((k, j) => {
        if (!allowed.has(k.username)) {
          throw badRequest(
            'not_a_recipient',
            `${what}.keys[${j}]: ${k.username} is neither the requester nor a reviewer`,
          );
        }
        const { rec, json } = wrappedJson(k.wrapped, `${what}.keys[${j}]`);
        this.kms.checkKekRecipient(k.username, rec, `${what}.keys[${j}]`);
        return { username: k.username, kid: rec.kid, wrapped: json };
      });
      if (new Set(keys.map((k) => k.username)).size !== keys.length) {
        throw badRequest('duplicate_recipient', `${what}: a recipient appears twice`);
      }
      return {
        fileId: f.fileId.toLowerCase(),
        path: f.path,
        size: f.size,
        sha256: f.sha256.toLowerCase(),
        sdc: JSON.stringify(f.sdc),
        keys,
      };
    });
    if (new Set(rows.map((x) => x.fileId)).size !== rows.length) {
      throw badRequest('duplicate_file', 'a file id appears twice');
    }
    if (new Set(rows.map((x) => x.path)).size !== rows.length) {
      throw badRequest('duplicate_file', 'a path appears twice');
    }
    this.kms.transaction(() => {
      this.store.replaceFiles(id, rows);
      const verdicts = rows.map((x) => (JSON.parse(x.sdc) as FileCheck).verdict);
      this.kms.log(
        user.name,
        'egress.manifest',
        `project:${projectId} egress:${id} files:${rows.length} fail:${verdicts.filter((v) => v === 'fail').length} review:${verdicts.filter((v) => v === 'review').length}`,
      );
    });
    return this.view(id, user.name);
  }

  justify(
    user: HubUser,
    projectId: string,
    id: number,
    body: { fileId: string; cell?: string; rule: string; text: string },
  ) {
    this.authorize(user, 'egress.edit', projectId, id);
    const f = this.file(id, body.fileId);
    const rec = JSON.parse(f.sdc) as FileCheck;
    const cell = body.cell ?? '';
    const hits = cell === '' ? rec.hits : rec.cells.find((c) => c.ref === cell)?.hits;
    if (!hits?.some((h) => h.rule === body.rule)) {
      throw badRequest(
        'no_such_check',
        `${f.path} has no failing or review check ${body.rule}${cell ? ` on cell ${cell}` : ''}`,
      );
    }
    this.kms.transaction(() => {
      this.store.justify(id, f.file_id, cell, body.rule, body.text, user.name, this.stamp());
      this.kms.log(
        user.name,
        'egress.justify',
        `project:${projectId} egress:${id} file:${f.file_id} rule:${body.rule}`,
      );
    });
    return this.view(id, user.name);
  }

  private file(id: number, fileId: string): EgressFileRow {
    const f = this.store.files(id).find((x) => x.file_id === fileId.toLowerCase());
    if (!f) throw notFound(`file ${fileId} of egress request ${id}`);
    return f;
  }

  submit(user: HubUser, projectId: string, id: number) {
    const { r } = this.authorize(user, 'egress.submit', projectId, id);
    const files = this.store.files(id);
    if (files.length === 0) throw conflict('empty_request', 'add files before submitting');
    const reviewers = this.reviewers(r);
    for (const role of EGRESS_REVIEWER_ROLES) {
      if (!reviewers.some((x) => x.role === role)) {
        throw conflict(
          'no_reviewers',
          `the project has no ${role} other than the requester to review the request`,
        );
      }
    }
    const needed = [r.requester, ...reviewers.map((x) => x.username)];
    for (const f of files) {
      const holders = this.store.keyHolders(id, f.file_id);
      for (const u of needed) {
        const kid = holders.get(u);
        const current = this.kms.people.currentKek(u)?.kid;
        if (kid === undefined || kid !== current) {
          throw conflict(
            'missing_keys',
            `${f.path}: its key is not wrapped to ${u}'s current KEK; wrap it before filing`,
          );
        }
      }
    }
    this.transition(user, 'egress.submit', r, 'submitted', ` files:${files.length}`);
    return this.view(id, user.name);
  }

  withdraw(user: HubUser, projectId: string, id: number) {
    const { r } = this.authorize(user, 'egress.withdraw', projectId, id);
    this.transition(user, 'egress.withdraw', r, 'withdrawn', '', () => this.store.deleteKeys(id));
    return this.view(id, user.name);
  }

  reviewKey(user: HubUser, projectId: string, id: number, fileId: string) {
    this.authorize(user, 'egress.review_key', projectId, id);
    const f = this.file(id, fileId);
    const k = this.store.key(id, f.file_id, user.name);
    if (!k) throw notFound(`key of ${f.path} for ${user.name}`);
    this.kms.transaction(() =>
      this.kms.log(
        user.name,
        'egress.review_key',
        `project:${projectId} egress:${id} file:${f.file_id}`,
      ),
    );
    return {
      fileId: f.file_id,
      path: f.path,
      size: f.size,
      sha256: f.sha256,
      wrapped: JSON.parse(k.wrapped) as WrappedKey,
    };
  }

  vote(
    user: HubUser,
    projectId: string,
    id: number,
    body: { fileId: string; vote: 'approve' | 'request_changes' },
  ) {
    const { r, role } = this.authorize(user, 'egress.vote', projectId, id);
    const f = this.file(id, body.fileId);
    // A vote needs the means to look: reviewers who joined after the filing hold no key.
    if (!this.store.key(id, f.file_id, user.name)) {
      throw conflict('no_review_key', `${user.name} holds no key of ${f.path} to review it with`);
    }
    this.kms.transaction(() => {
      this.store.vote(id, r.round, f.file_id, user.name, role!, body.vote, this.stamp());
      this.kms.log(
        user.name,
        'egress.vote',
        `project:${projectId} egress:${id} file:${f.file_id} vote:${body.vote}`,
      );
      const next = this.reviewState(r);
      if (next !== r.state) {
        this.store.setState(id, next, this.stamp());
        this.kms.log(
          user.name,
          'egress.reviewed',
          `project:${projectId} egress:${id} from:${r.state} state:${next}`,
        );
      }
    });
    return this.view(id, user.name);
  }

  /** submitted -> partially_reviewed (one reviewer voted on every file) -> reviewed (a PI and a
   * data owner both have). Votes are never deleted within a round, so this only moves forward. */
  private reviewState(r: EgressRow): EgressState {
    const files = this.store.files(r.id);
    const votes = this.store.votes(r.id, r.round);
    const done = this.reviewers(r).filter((rv) =>
      files.every((f) => votes.some((v) => v.file_id === f.file_id && v.reviewer === rv.username)),
    );
    if (EGRESS_REVIEWER_ROLES.every((role) => done.some((d) => d.role === role))) return 'reviewed';
    return done.length > 0 ? 'partially_reviewed' : 'submitted';
  }

  comment(
    user: HubUser,
    projectId: string,
    id: number,
    body: { text: string; fileId?: string; visibility?: 'reviewers' | 'requester' },
  ) {
    const r = this.store.get(id);
    const asRequester = r?.requester === user.name;
    const action = asRequester ? 'egress.reply' : 'egress.comment';
    const { r: req } = this.authorize(user, action, projectId, id);
    if (asRequester && body.visibility === 'reviewers') {
      throw badRequest('invalid_visibility', "the requester's comments are visible to everyone");
    }
    const fileId = body.fileId === undefined ? null : this.file(id, body.fileId).file_id;
    const visibility = asRequester ? 'requester' : (body.visibility ?? 'reviewers');
    this.kms.transaction(() => {
      const cid = this.store.comment(
        id,
        req.round,
        fileId,
        user.name,
        visibility,
        body.text,
        this.stamp(),
      );
      this.kms.log(
        user.name,
        action,
        `project:${projectId} egress:${id} comment:${cid} visibility:${visibility}`,
      );
    });
    return this.view(id, user.name);
  }

  decide(user: HubUser, projectId: string, id: number, decision: 'approve' | 'reject' | 'return') {
    const action = `egress.${decision}` as const;
    const { r } = this.authorize(user, action, projectId, id);
    if (decision === 'approve') {
      const votes = this.store.votes(id, r.round);
      for (const f of this.store.files(id)) {
        const fv = votes.filter((v) => v.file_id === f.file_id);
        if (fv.some((v) => v.vote === 'request_changes')) {
          throw conflict('changes_requested', `${f.path}: a reviewer requested changes`);
        }
        for (const role of EGRESS_REVIEWER_ROLES) {
          if (!fv.some((v) => v.role === role && v.vote === 'approve')) {
            throw conflict('not_approved', `${f.path}: no ${role} has approved it`);
          }
        }
      }
    }
    const to: EgressState =
      decision === 'approve' ? 'approved' : decision === 'reject' ? 'rejected' : 'returned';
    this.transition(
      user,
      action,
      r,
      to,
      '',
      decision === 'reject' ? () => this.store.deleteKeys(id) : undefined,
    );
    return this.view(id, user.name);
  }

  /** The requester's wrapped DEKs with the frozen manifest, which the download checks against. */
  release(user: HubUser, projectId: string, id: number) {
    const { r } = this.authorize(user, 'egress.release', projectId, id);
    const files = this.store.files(id).map((f) => {
      const k = this.store.key(id, f.file_id, user.name);
      if (!k) throw new KmsError(500, 'internal', `no release key for ${f.path}`);
      return {
        fileId: f.file_id,
        path: f.path,
        size: f.size,
        sha256: f.sha256,
        wrapped: JSON.parse(k.wrapped) as WrappedKey,
      };
    });
    if (r.state === 'approved') {
      this.transition(user, 'egress.release', r, 'released', ` files:${files.length}`);
    } else {
      this.kms.transaction(() =>
        this.kms.log(
          user.name,
          'egress.download',
          `project:${projectId} egress:${id} files:${files.length}`,
        ),
      );
    }
    return { id, projectId, state: 'released' as const, files };
  }

  revoke(user: HubUser, projectId: string, id: number) {
    const { r } = this.authorize(user, 'egress.revoke', projectId, id);
    this.transition(user, 'egress.revoke', r, 'revoked', '', () => this.store.deleteKeys(id));
    return this.view(id, user.name);
  }
}
