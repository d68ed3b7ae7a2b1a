/**
 * The one place that decides whether a request may proceed. Pure: the caller gathers the facts
 * (who asks, their training and agreement, the project and membership) and this module answers
 * allow, or deny with a stable reason code and a sentence naming the failed condition.
 */

export type Role = 'pi' | 'researcher' | 'data_owner' | 'reviewer';
export const ROLES: readonly Role[] = ['pi', 'researcher', 'data_owner', 'reviewer'];

export type TrainingKind = 'hpc' | 'data_awareness' | 'tre_rules';
export const TRAINING_KINDS: readonly TrainingKind[] = ['hpc', 'data_awareness', 'tre_rules'];

export type Action =
  | 'self'
  | 'admin'
  | 'trustee'
  | 'project.propose'
  | 'project.read'
  | 'project.consent'
  | 'project.close'
  | 'member.add'
  | 'member.remove'
  | 'epoch.publish'
  | 'project_key.release'
  | 'grant.list'
  | 'grant.complete'
  | 'file.register'
  | 'file_key.release'
  | 'file.add_recipient'
  | 'review_key.release'
  | 'audit.fs_events'
  | 'audit.append'
  | 'file.confirm'
  | 'file.destroy'
  | EgressAction;

/** Egress (Safe Outputs) actions: one per transition or read of a request. */
export type EgressAction =
  | 'egress.create'
  | 'egress.list'
  | 'egress.read'
  | 'egress.edit'
  | 'egress.submit'
  | 'egress.withdraw'
  | 'egress.reply'
  | 'egress.review_key'
  | 'egress.vote'
  | 'egress.comment'
  | 'egress.return'
  | 'egress.approve'
  | 'egress.reject'
  | 'egress.release'
  | 'egress.revoke';

export type EgressState =
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

export type DenyReason =
  | 'admin_required'
  | 'not_registered'
  | 'agreement_not_accepted'
  | 'agreement_outdated'
  | 'training_missing'
  | 'training_expired'
  | 'not_a_trustee'
  | 'project_not_found'
  | 'not_a_member'
  | 'role_not_allowed'
  | 'project_closed'
  | 'project_not_consented'
  | 'outside_window'
  | 'not_requester'
  | 'self_review'
  | 'wrong_state'
  | 'service_required'
  | 'user_required';

interface ProjectRule {
  roles: readonly Role[];
  /** The project must not be closed. */
  open: boolean;
  /** Every data owner must have consented. */
  consented: boolean;
  /** Now must lie inside the member's valid_from..valid_until. */
  window: boolean;
  /** Admins may do this without being members. */
  adminMay?: boolean;
}

/**
 * Who, relative to an egress request, may act: its requester; a reviewer (a PI or data owner
 * who is not the requester: nobody reviews their own outputs); or either of them.
 */
type EgressParty = 'requester' | 'reviewer' | 'either' | 'any';

interface EgressRule {
  party: EgressParty;
  /** The states the request must be in. */
  from: readonly EgressState[];
}

interface Rule {
  /** Safe People: registered, current agreement accepted, all trainings valid. */
  people: boolean;
  admin?: boolean;
  trustee?: boolean;
  /**
   * A trusted hub service (or a hub admin) acts, not a person: the ingress confirming or
   * destroying the files it staged, or appending its own audit events. With `project`, only
   * the project's existence and (if `open`) that it is not closed are checked: a service is no
   * member.
   */
  service?: boolean;
  project?: ProjectRule;
  egress?: EgressRule;
}

const KEY_HOLDERS: readonly Role[] = ['pi', 'researcher', 'data_owner'];
/** The egress reviewers: PI and data owner review every request (four eyes). */
export const EGRESS_REVIEWER_ROLES: readonly Role[] = ['pi', 'data_owner'];
export const IN_REVIEW: readonly EgressState[] = ['submitted', 'partially_reviewed', 'reviewed'];
const OPEN_EGRESS: readonly EgressState[] = ['draft', 'returned', ...IN_REVIEW];

/** An egress action inside a live, consented project, within the member's window. */
function egressRule(roles: readonly Role[], egress?: EgressRule): Rule {
  return {
    people: true,
    project: { roles, open: true, consented: true, window: true },
    ...(egress ? { egress } : {}),
  };
}

/** The rule book. Every endpoint maps to exactly one action here. */
export const RULES: Readonly<Record<Action, Rule>> = {
  self: { people: false },
  admin: { people: false, admin: true },
  trustee: { people: true, trustee: true },
  'project.propose': { people: true },
  'project.read': {
    people: false,
    project: { roles: ROLES, open: false, consented: false, window: false, adminMay: true },
  },
  'project.consent': {
    people: true,
    project: { roles: ['data_owner'], open: true, consented: false, window: true },
  },
  'project.close': {
    people: false,
    project: {
      roles: ['pi', 'data_owner'],
      open: true,
      consented: false,
      window: false,
      adminMay: true,
    },
  },
  'member.add': {
    people: true,
    project: { roles: ['pi'], open: true, consented: false, window: true },
  },
  'member.remove': {
    people: true,
    project: { roles: ['pi'], open: true, consented: false, window: true },
  },
  'epoch.publish': {
    people: true,
    project: { roles: ['pi', 'data_owner'], open: true, consented: false, window: true },
  },
  'project_key.release': {
    people: true,
    project: { roles: KEY_HOLDERS, open: true, consented: true, window: true },
  },
  'grant.list': {
    people: true,
    project: { roles: ['pi', 'data_owner'], open: true, consented: false, window: true },
  },
  'grant.complete': {
    people: true,
    project: { roles: ['pi', 'data_owner'], open: true, consented: false, window: true },
  },
  'file.register': {
    people: true,
    project: { roles: KEY_HOLDERS, open: true, consented: true, window: true },
  },
  'file_key.release': {
    people: true,
    project: { roles: KEY_HOLDERS, open: true, consented: true, window: true },
  },
  'file.add_recipient': {
    people: true,
    project: { roles: KEY_HOLDERS, open: true, consented: true, window: true },
  },
  'review_key.release': {
    people: true,
    project: { roles: ['pi', 'data_owner', 'reviewer'], open: true, consented: true, window: true },
  },
  // Events describe what a session already did: they are taken from any key holder of the
  // project, also just after their window ended or the project closed, so no evidence is lost.
  'audit.fs_events': {
    people: false,
    project: { roles: KEY_HOLDERS, open: false, consented: false, window: false },
  },
  'audit.append': { people: false, service: true },
  'file.confirm': {
    people: false,
    service: true,
    project: { roles: [], open: true, consented: false, window: false },
  },
  'file.destroy': {
    people: false,
    service: true,
    project: { roles: [], open: false, consented: false, window: false },
  },
  'egress.create': egressRule(KEY_HOLDERS),
  'egress.list': egressRule(KEY_HOLDERS),
  'egress.read': egressRule(KEY_HOLDERS, {
    party: 'either',
    from: [...OPEN_EGRESS, 'approved', 'rejected', 'withdrawn', 'released', 'revoked'],
  }),
  'egress.edit': egressRule(KEY_HOLDERS, { party: 'requester', from: ['draft', 'returned'] }),
  'egress.submit': egressRule(KEY_HOLDERS, { party: 'requester', from: ['draft', 'returned'] }),
  'egress.withdraw': egressRule(KEY_HOLDERS, { party: 'requester', from: ['draft', 'returned'] }),
  'egress.reply': egressRule(KEY_HOLDERS, { party: 'requester', from: OPEN_EGRESS }),
  'egress.review_key': egressRule(EGRESS_REVIEWER_ROLES, { party: 'reviewer', from: IN_REVIEW }),
  'egress.vote': egressRule(EGRESS_REVIEWER_ROLES, { party: 'reviewer', from: IN_REVIEW }),
  'egress.comment': egressRule(EGRESS_REVIEWER_ROLES, { party: 'reviewer', from: OPEN_EGRESS }),
  'egress.return': egressRule(EGRESS_REVIEWER_ROLES, { party: 'reviewer', from: IN_REVIEW }),
  'egress.approve': egressRule(EGRESS_REVIEWER_ROLES, { party: 'reviewer', from: ['reviewed'] }),
  'egress.reject': egressRule(EGRESS_REVIEWER_ROLES, { party: 'reviewer', from: ['reviewed'] }),
  'egress.release': egressRule(KEY_HOLDERS, {
    party: 'requester',
    from: ['approved', 'released'],
  }),
  'egress.revoke': egressRule(EGRESS_REVIEWER_ROLES, { party: 'any', from: ['released'] }),
};

export interface PersonFacts {
  agreementVersion: string | null;
  trainings: ReadonlyArray<{ kind: TrainingKind; expiresAt: string }>;
  trustee: boolean;
}

export interface Subject {
  username: string;
  admin: boolean;
  /** A trusted hub service (its token resolved to a service the KMS is configured to trust). */
  service?: boolean;
  /** Absent when the user has never registered with the KMS. */
  person?: PersonFacts;
}

export interface ProjectFacts {
  closed: boolean;
  consented: boolean;
  membership?: { role: Role; validFrom: string | null; validUntil: string | null };
  /** The egress request the action is about, if any. */
  egress?: { requester: string; state: EgressState };
}

export interface Environment {
  now: Date;
  agreementVersion: string;
}

export type Decision =
  | { allow: true }
  | { allow: false; reason: DenyReason; message: string; status: 401 | 403 | 404 | 409 };

function deny(reason: DenyReason, message: string, status: 403 | 404 | 409 = 403): Decision {
  return { allow: false, reason, message, status };
}

function checkPeople(subject: Subject, env: Environment): Decision | undefined {
  const p = subject.person;
  if (!p) return deny('not_registered', `${subject.username} has not registered with the KMS`);
  if (p.agreementVersion === null) {
    return deny(
      'agreement_not_accepted',
      `${subject.username} has not accepted the user agreement (version ${env.agreementVersion})`,
    );
  }
  if (p.agreementVersion !== env.agreementVersion) {
    return deny(
      'agreement_outdated',
      `${subject.username} accepted agreement version ${p.agreementVersion}, the current one is ${env.agreementVersion}`,
    );
  }
  for (const kind of TRAINING_KINDS) {
    const t = p.trainings.find((x) => x.kind === kind);
    if (!t)
      return deny('training_missing', `${subject.username} has no ${kind} training on record`);
    if (Date.parse(t.expiresAt) <= env.now.getTime()) {
      return deny(
        'training_expired',
        `${subject.username}'s ${kind} training expired on ${t.expiresAt}`,
      );
    }
  }
  return undefined;
}

/**
 * Decides one request. `project` is undefined for actions without a project and null when the
 * request names a project that does not exist. Conditions are checked in a fixed order, so a
 * request failing several names the first: admin, Safe People, trustee, project existence,
 * membership, role, closure, consent, window, then for egress the party (requester or
 * reviewer) and the request's state.
 */
export function decide(
  action: Action,
  subject: Subject,
  project: ProjectFacts | null | undefined,
  env: Environment,
): Decision {
  const rule = RULES[action];
  if (subject.service && !rule.service) {
    return deny('user_required', `${action} is done by a person, not by a service`);
  }
  if (rule.service) {
    if (!subject.service && !subject.admin) {
      return deny('service_required', `${action} needs a trusted hub service or a hub admin`);
    }
    if (!rule.project) return { allow: true };
    if (!project) return deny('project_not_found', 'no such project', 404);
    if (rule.project.open && project.closed) return deny('project_closed', 'the project is closed');
    return { allow: true };
  }
  if (rule.admin && !subject.admin) return deny('admin_required', `${action} needs a hub admin`);
  if (rule.people) {
    const d = checkPeople(subject, env);
    if (d) return d;
  }
  if (rule.trustee && !subject.person?.trustee) {
    return deny('not_a_trustee', `${subject.username} is not a trustee`);
  }
  const pr = rule.project;
  if (!pr) return { allow: true };
  if (!project) return deny('project_not_found', 'no such project', 404);
  const m = project.membership;
  if (!m) {
    if (pr.adminMay && subject.admin) return { allow: true };
    return deny('not_a_member', `${subject.username} is not a member of this project`);
  }
  if (!pr.roles.includes(m.role)) {
    if (pr.adminMay && subject.admin) return { allow: true };
    return deny('role_not_allowed', `the ${m.role} role may not ${action}`);
  }
  if (pr.open && project.closed) return deny('project_closed', 'the project is closed');
  if (pr.consented && !project.consented) {
    return deny('project_not_consented', 'not every data owner has consented to the project');
  }
  if (pr.window) {
    const now = env.now.getTime();
    if (m.validFrom !== null && now < Date.parse(m.validFrom)) {
      return deny('outside_window', `access starts at ${m.validFrom}`);
    }
    if (m.validUntil !== null && now >= Date.parse(m.validUntil)) {
      return deny('outside_window', `access ended at ${m.validUntil}`);
    }
  }
  return rule.egress ? checkEgress(action, rule.egress, subject, project) : { allow: true };
}

function checkEgress(
  action: Action,
  rule: EgressRule,
  subject: Subject,
  project: ProjectFacts,
): Decision {
  const e = project.egress;
  if (!e) return deny('project_not_found', 'no such egress request', 404);
  const isRequester = e.requester === subject.username;
  const isReviewer =
    !isRequester && EGRESS_REVIEWER_ROLES.includes(project.membership?.role as Role);
  if (rule.party === 'requester' && !isRequester) {
    return deny('not_requester', `only the requester ${e.requester} may ${action}`);
  }
  if (rule.party === 'reviewer' && isRequester) {
    return deny('self_review', 'nobody reviews their own egress request');
  }
  if (rule.party === 'either' && !isRequester && !isReviewer) {
    return deny('not_requester', `only the requester and the reviewers may ${action}`);
  }
  if (!rule.from.includes(e.state)) {
    return deny('wrong_state', `${action} is not possible when the request is ${e.state}`, 409);
  }
  return { allow: true };
}
