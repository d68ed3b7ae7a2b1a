/**
 * The TRE console in the browser: plain DOM, the KMS's `/v1` API on the same origin. The browser
 * signed in through the hub (the server sent it there when it had no session): it holds an
 * HttpOnly session cookie the page never sees, and sends the session's XSRF value, readable
 * only under console/, in a header.
 */

interface Hit {
  rule: string;
  verdict: string;
  detail: string;
}
interface Cell {
  ref: string;
  verdict: string;
  count: number | null;
  hits: Hit[];
}
interface FileView {
  fileId: string;
  path: string;
  size: number;
  sha256: string;
  sdc: {
    verdict: string;
    shape: string;
    summary: Record<string, number>;
    cells: Cell[];
    hits: Hit[];
  };
  votes: Array<{ reviewer: string; role: string; vote: string }>;
  justifications: Array<{ cell: string; rule: string; text: string; author: string }>;
}
interface EgressView {
  id: number;
  projectId: string;
  requester: string;
  title: string;
  state: string;
  round: number;
  reviewers: Array<{ username: string; role: string; done: boolean }>;
  files: FileView[];
  comments: Array<{ author: string; text: string; visibility: string; fileId: string | null }>;
}
interface MyProject {
  id: string;
  title: string;
  role: string;
  state: string;
  consent: {
    complete: boolean;
    dataOwners: Array<{ username: string; consentedAt: string | null }>;
  };
}

const XSRF_COOKIE = 'tre-kms-xsrf';
/** The KMS's root as the browser sees it: `/` direct, `/services/kms/` behind the hub's proxy. */
const BASE = location.pathname.replace(/console\/[^/]*$/, '');
const $ = (id: string): HTMLElement => document.getElementById(id)!;

class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly reason?: string,
  ) {
    super(message);
  }
}

function xsrf(): string {
  for (const part of document.cookie.split(';')) {
    const [name, ...rest] = part.trim().split('=');
    if (name === XSRF_COOKIE) return rest.join('=');
  }
  return '';
}

async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const res = await fetch(BASE + path.replace(/^\//, ''), {
    method,
    headers: {
      'X-TRE-XSRF': xsrf(),
      ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}),
    },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    credentials: 'same-origin',
    cache: 'no-store',
  });
  const type = res.headers.get('content-type') ?? '';
  if (!res.ok) {
    const e = type.startsWith('application/json')
      ? ((await res.json()) as { error?: { code?: string; message?: string; reason?: string } })
          .error
      : undefined;
    throw new ApiError(res.status, e?.code ?? 'error', e?.message ?? res.statusText, e?.reason);
  }
  return (type.startsWith('application/json') ? await res.json() : await res.text()) as T;
}

function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | ((ev: Event) => void)> = {},
  ...children: Array<Node | string | null | undefined>
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (typeof v === 'function') el.addEventListener(k.replace(/^on/, ''), v);
    else el.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) el.append(c);
  return el;
}

const badge = (v: string): HTMLElement => h('span', { class: `badge ${v}`, 'data-verdict': v }, v);

function say(text: string, kind: 'info' | 'error' = 'info'): void {
  const s = $('status');
  s.className = kind;
  s.textContent = text;
}

function explain(e: unknown): string {
  if (e instanceof ApiError) return `${e.message}${e.reason ? ` (${e.reason})` : ''}`;
  return e instanceof Error ? e.message : String(e);
}

let current = 'projects';

async function act(what: () => Promise<unknown>, done: string): Promise<void> {
  try {
    await what();
    say(done);
  } catch (e) {
    say(explain(e), 'error');
    return;
  }
  await show(current);
}

function button(label: string, action: string, run: () => Promise<unknown>, done: string) {
  return h('button', { 'data-action': action, onclick: () => void act(run, done) }, label);
}

// ---- projects and consent -------------------------------------------------------------------

async function projectsView(): Promise<Node[]> {
  const projects = await api<MyProject[]>('GET', '/v1/me/projects');
  const me = await api<{ username: string }>('GET', '/v1/me');
  if (projects.length === 0) return [h('p', {}, 'You are not a member of any project.')];
  return projects.map((p) => {
    const mine = p.consent.dataOwners.find((o) => o.username === me.username);
    return h(
      'div',
      { class: 'card', 'data-project': p.id },
      h('strong', {}, `${p.title} (${p.id})`),
      h('div', { class: 'meta' }, `your role: ${p.role} · state: ${p.state}`),
      h(
        'ul',
        {},
        ...p.consent.dataOwners.map((o) =>
          h(
            'li',
            {},
            `${o.username}: ${o.consentedAt ? `consented ${o.consentedAt.slice(0, 10)}` : 'not yet consented'}`,
          ),
        ),
      ),
      mine && !mine.consentedAt
        ? button(
            'Give consent',
            'consent',
            () => api('POST', `/v1/projects/${encodeURIComponent(p.id)}/consent`),
            `Consent recorded for ${p.id}.`,
          )
        : null,
    );
  });
}

// ---- ingress --------------------------------------------------------------------------------

async function ingressView(): Promise<Node[]> {
  const projects = await api<MyProject[]>('GET', '/v1/me/projects');
  const owned = projects.filter((p) => p.role === 'data_owner' || p.role === 'pi');
  const out: Node[] = [
    h(
      'p',
      { class: 'meta' },
      'Uploads are confirmed by the ingress service after its checks; until then their keys are not released. ' +
        "The KMS does not list the uploads awaiting confirmation to people yet, so this page shows each project's key state.",
    ),
  ];
  for (const p of owned) {
    const view = await api<{
      epoch: number;
      rotationDue: boolean;
      members: Array<{ username: string; role: string }>;
    }>('GET', `/v1/projects/${encodeURIComponent(p.id)}`);
    out.push(
      h(
        'div',
        { class: 'card', 'data-project': p.id },
        h('strong', {}, p.title),
        h(
          'div',
          { class: 'meta' },
          `key epoch ${view.epoch}${view.rotationDue ? ' · rotation due' : ''} · ${view.members.length} members`,
        ),
      ),
    );
  }
  return out;
}

// ---- egress review --------------------------------------------------------------------------

function cellsTable(f: FileView): Node {
  const rows = f.sdc.cells.filter((c) => c.verdict !== 'pass');
  const fileHits = f.sdc.hits.map((x) =>
    h('div', { class: 'meta' }, badge(x.verdict), ` ${x.rule}: ${x.detail}`),
  );
  if (rows.length === 0) {
    return h(
      'div',
      {},
      ...fileHits,
      h('div', { class: 'meta' }, `${f.sdc.summary.pass ?? 0} cells pass (${f.sdc.shape})`),
    );
  }
  return h(
    'div',
    {},
    ...fileHits,
    h(
      'table',
      { 'data-sdc': f.path },
      h(
        'tr',
        {},
        h('th', {}, 'cell'),
        h('th', {}, 'count'),
        h('th', {}, 'verdict'),
        h('th', {}, 'rules'),
        h('th', {}, 'justification'),
      ),
      ...rows.map((c) =>
        h(
          'tr',
          {},
          h('td', {}, c.ref),
          h('td', {}, String(c.count ?? '')),
          h('td', {}, badge(c.verdict)),
          h('td', {}, c.hits.map((x) => `${x.rule}: ${x.detail}`).join('; ')),
          h(
            'td',
            {},
            f.justifications
              .filter((j) => j.cell === c.ref)
              .map((j) => `${j.author}: ${j.text}`)
              .join('; '),
          ),
        ),
      ),
    ),
  );
}

function requestCard(r: EgressView, me: string): HTMLElement {
  const p = encodeURIComponent(r.projectId);
  const base = `/v1/projects/${p}/egress/${r.id}`;
  const inReview = ['submitted', 'partially_reviewed', 'reviewed'].includes(r.state);
  const reviewer = r.reviewers.some((x) => x.username === me);
  const comment = h('input', { type: 'text', 'data-field': 'comment', placeholder: 'comment' });
  return h(
    'div',
    { class: 'card', 'data-request': String(r.id), 'data-state': r.state },
    h('strong', {}, `#${r.id} ${r.title}`),
    ' ',
    h('span', { class: 'meta', 'data-field': 'state' }, r.state),
    h(
      'div',
      { class: 'meta' },
      `project ${r.projectId} · by ${r.requester} · round ${r.round} · reviewers: ${r.reviewers
        .map((x) => `${x.username} (${x.role})${x.done ? ' done' : ''}`)
        .join(', ')}`,
    ),
    ...r.files.map((f) =>
      h(
        'div',
        { class: 'card', 'data-file': f.path },
        badge(f.sdc.verdict),
        ` ${f.path} · ${f.size} bytes · sha256 ${f.sha256.slice(0, 16)}…`,
        cellsTable(f),
        h(
          'div',
          { class: 'meta' },
          f.votes.length
            ? f.votes.map((v) => `${v.reviewer}: ${v.vote}`).join(' · ')
            : 'no votes yet',
        ),
        inReview && reviewer
          ? h(
              'div',
              { class: 'row' },
              button(
                'Approve file',
                'approve-file',
                () => api('POST', `${base}/votes`, { fileId: f.fileId, vote: 'approve' }),
                `Approved ${f.path}.`,
              ),
              button(
                'Request changes',
                'request-changes',
                () => api('POST', `${base}/votes`, { fileId: f.fileId, vote: 'request_changes' }),
                `Changes requested on ${f.path}.`,
              ),
            )
          : null,
      ),
    ),
    r.comments.length
      ? h(
          'ul',
          {},
          ...r.comments.map((c) => h('li', {}, `${c.author} (${c.visibility}): ${c.text}`)),
        )
      : null,
    reviewer && r.state !== 'withdrawn'
      ? h(
          'div',
          { class: 'row' },
          comment,
          button(
            'Comment to requester',
            'comment',
            () => api('POST', `${base}/comments`, { text: comment.value, visibility: 'requester' }),
            'Comment sent.',
          ),
          button(
            'Comment to reviewers',
            'comment-private',
            () => api('POST', `${base}/comments`, { text: comment.value, visibility: 'reviewers' }),
            'Comment sent.',
          ),
        )
      : null,
    reviewer
      ? h(
          'div',
          { class: 'row' },
          r.state === 'reviewed'
            ? button(
                'Approve request',
                'decide-approve',
                () => api('POST', `${base}/decision`, { decision: 'approve' }),
                `Request ${r.id} approved.`,
              )
            : null,
          r.state === 'reviewed'
            ? button(
                'Reject',
                'decide-reject',
                () => api('POST', `${base}/decision`, { decision: 'reject' }),
                `Request ${r.id} rejected.`,
              )
            : null,
          inReview
            ? button(
                'Return to requester',
                'decide-return',
                () => api('POST', `${base}/decision`, { decision: 'return' }),
                `Request ${r.id} returned.`,
              )
            : null,
          r.state === 'released'
            ? button(
                'Revoke release',
                'revoke',
                () => api('POST', `${base}/revoke`),
                `Request ${r.id} revoked.`,
              )
            : null,
        )
      : null,
  );
}

async function egressView(): Promise<Node[]> {
  const me = await api<{ username: string }>('GET', '/v1/me');
  const projects = await api<MyProject[]>('GET', '/v1/me/projects');
  const waiting = await api<unknown[]>('GET', '/v1/me/reviews');
  const out: Node[] = [
    h(
      'p',
      { class: 'meta', 'data-field': 'waiting' },
      `${waiting.length} request(s) wait for your vote or decision.`,
    ),
  ];
  for (const p of projects.filter((x) => x.role === 'pi' || x.role === 'data_owner')) {
    const list = await api<Array<{ id: number; state: string }>>(
      'GET',
      `/v1/projects/${encodeURIComponent(p.id)}/egress`,
    );
    for (const item of list) {
      if (item.state === 'draft' || item.state === 'withdrawn') continue;
      const r = await api<EgressView>(
        'GET',
        `/v1/projects/${encodeURIComponent(p.id)}/egress/${item.id}`,
      );
      out.push(requestCard(r, me.username));
    }
  }
  if (out.length === 1) out.push(h('p', {}, 'No egress requests in your projects.'));
  return out;
}

// ---- vault ----------------------------------------------------------------------------------

async function vaultView(): Promise<Node[]> {
  let list: Array<{ id: number; username: string; createdAt: string }>;
  try {
    list = await api('GET', '/v1/trustee/recoveries');
  } catch (e) {
    if (e instanceof ApiError && e.status === 403) return [h('p', {}, 'You are not a trustee.')];
    throw e;
  }
  return [
    h(
      'p',
      { class: 'meta' },
      "Approving re-wraps your share of the person's key to their recovery key. That needs your own key, " +
        'which never reaches this page: approve from a lab session or with the command-line client.',
    ),
    ...(list.length === 0
      ? [h('p', {}, 'No recovery requests wait for you.')]
      : list.map((r) =>
          h(
            'div',
            { class: 'card', 'data-recovery': String(r.id) },
            `${r.username} asked to recover their key on ${r.createdAt.slice(0, 10)}`,
          ),
        )),
  ];
}

// ---- audit ----------------------------------------------------------------------------------

interface Entry {
  seq: number;
  time: string;
  actor: string;
  action: string;
  object: string;
  result: string;
  prev_hash: string;
  hash: string;
}

const hex = (b: ArrayBuffer): string =>
  [...new Uint8Array(b)].map((x) => x.toString(16).padStart(2, '0')).join('');

async function sha256(text: string): Promise<string> {
  return hex(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text)));
}

function pemBody(pem: string): Uint8Array<ArrayBuffer> {
  const b64 = pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

function b64(s: string): Uint8Array<ArrayBuffer> {
  const std = s.replace(/-/g, '+').replace(/_/g, '/');
  return Uint8Array.from(atob(std + '='.repeat((4 - (std.length % 4)) % 4)), (c) =>
    c.charCodeAt(0),
  );
}

/** Re-checks the chain (every hash and link) and every checkpoint signature, here in the browser. */
async function verify(
  lines: string[],
  pem: string,
): Promise<{ ok: boolean; message: string; entries: Entry[] }> {
  const entries: Entry[] = [];
  let key: CryptoKey | null = null;
  try {
    key = await crypto.subtle.importKey('spki', pemBody(pem), { name: 'Ed25519' }, false, [
      'verify',
    ]);
  } catch {
    key = null;
  }
  let prev = '0'.repeat(64);
  let signed = 0;
  for (let i = 1; i < lines.length; i++) {
    const o = JSON.parse(lines[i]!) as Entry & {
      checkpoint?: { seq: number; hash: string; time: string; signature: string };
    };
    if (o.checkpoint) {
      const c = o.checkpoint;
      if (key) {
        const msg = new TextEncoder().encode(
          `tre-audit-checkpoint/v1\0${c.seq}\0${c.hash}\0${c.time}`,
        );
        const good = await crypto.subtle.verify('Ed25519', key, b64(c.signature), msg);
        if (!good)
          return { ok: false, message: `checkpoint at entry ${c.seq}: bad signature`, entries };
      }
      signed = c.seq;
      continue;
    }
    const e = o;
    if (e.prev_hash !== prev) return { ok: false, message: `entry ${e.seq}: broken link`, entries };
    const want = await sha256(
      JSON.stringify([e.seq, e.time, e.actor, e.action, e.object, e.result, e.prev_hash]),
    );
    if (want !== e.hash)
      return { ok: false, message: `entry ${e.seq}: hash does not match its content`, entries };
    prev = e.hash;
    entries.push(e);
  }
  return {
    ok: true,
    message: `${entries.length} entries chained and hashed correctly; signed checkpoints up to entry ${signed}${key ? '' : ' (signatures not checked: this browser has no Ed25519)'}`,
    entries,
  };
}

async function auditView(): Promise<Node[]> {
  let text: string;
  try {
    text = await api<string>('GET', '/v1/audit/export');
  } catch (e) {
    if (e instanceof ApiError && e.status === 403)
      return [h('p', {}, 'Only hub admins can read the audit log.')];
    throw e;
  }
  const pem = await api<string>('GET', '/v1/audit/public-key');
  const lines = text.split('\n').filter((l) => l !== '');
  const result = await verify(lines, pem);
  const last = result.entries.slice(-200).reverse();
  return [
    h(
      'div',
      { class: 'card', 'data-field': 'verification', 'data-ok': String(result.ok) },
      badge(result.ok ? 'ok' : 'broken'),
      ` ${result.message}`,
    ),
    h(
      'p',
      { class: 'meta' },
      'Checked against the key this KMS publishes; pin the key offline (tre-kms audit verify --public-key) for independent assurance.',
    ),
    h(
      'table',
      { 'data-audit': 'entries' },
      h(
        'tr',
        {},
        h('th', {}, '#'),
        h('th', {}, 'time'),
        h('th', {}, 'actor'),
        h('th', {}, 'action'),
        h('th', {}, 'object'),
        h('th', {}, 'result'),
      ),
      ...last.map((e) =>
        h(
          'tr',
          {},
          h('td', {}, String(e.seq)),
          h('td', {}, e.time),
          h('td', {}, e.actor),
          h('td', {}, e.action),
          h('td', {}, e.object),
          h('td', {}, e.result),
        ),
      ),
    ),
  ];
}

// ---- shell ----------------------------------------------------------------------------------

const VIEWS: Record<string, () => Promise<Node[]>> = {
  projects: projectsView,
  ingress: ingressView,
  egress: egressView,
  vault: vaultView,
  audit: auditView,
};

async function show(tab: string): Promise<void> {
  current = tab;
  for (const b of document.querySelectorAll<HTMLButtonElement>('nav button')) {
    if (b.dataset.tab === tab) b.setAttribute('aria-current', 'page');
    else b.removeAttribute('aria-current');
  }
  const view = $('view');
  view.dataset.loaded = 'false';
  try {
    view.replaceChildren(...(await VIEWS[tab]!()));
  } catch (e) {
    say(explain(e), 'error');
    view.replaceChildren();
  }
  view.dataset.view = tab;
  view.dataset.loaded = 'true';
}

function signedOut(title: string, reason: string): void {
  $('app').hidden = true;
  $('signout').hidden = true;
  $('who').textContent = '';
  $('signin-title').textContent = title;
  $('signin-reason').textContent = reason;
  $('signin').hidden = false;
}

async function signedIn(): Promise<void> {
  try {
    const me = await api<{ username: string; admin: boolean; trustee: boolean }>('GET', '/v1/me');
    $('who').textContent =
      `${me.username}${me.admin ? ' (admin)' : ''}${me.trustee ? ' (trustee)' : ''}`;
    $('signin').hidden = true;
    $('app').hidden = false;
    $('signout').hidden = false;
    await show(current);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) signedOut('Not signed in', explain(e));
    else say(explain(e), 'error');
  }
}

async function signOut(): Promise<void> {
  try {
    await api('POST', '/console/signout');
  } catch (e) {
    say(explain(e), 'error');
    return;
  }
  signedOut(
    'Signed out',
    'You are signed out of the TRE console. Your JupyterHub login is unchanged: sign out there too on a shared computer.',
  );
}

function start(): void {
  $('signout').addEventListener('click', () => void signOut());
  for (const b of document.querySelectorAll<HTMLButtonElement>('nav button')) {
    b.addEventListener('click', () => void show(b.dataset.tab!));
  }
  void signedIn();
}

start();

export {};
