/**
 * @jest-environment jsdom
 *
 * The sidebar panels rendered in a DOM against a scripted server extension (a unit-test double;
 * the real server extension and KMS are exercised by the browser test, lab.e2e.test.ts).
 */
import { describe, expect, test } from '@jest/globals';
import { Widget } from '@lumino/widgets';
import { TreApi, type Transport } from '../src/api.js';
import { EgressPanel } from '../src/egress-panel.js';
import { KeysPanel } from '../src/keys-panel.js';
import { ProjectsPanel, whenServerStopped } from '../src/projects-panel.js';
import type { EgressRequest, FileCheck, MyProject } from '../src/types.js';

type Route = (body: unknown) => { status?: number; json: unknown };

/** jsdom has no fetch Response: the panels read only ok, status and text(). */
function reply(status: number, json: unknown): Response {
  const body = JSON.stringify(json);
  return { ok: status < 400, status, text: async () => body } as unknown as Response;
}

function server(routes: Record<string, Route>): { api: TreApi; calls: string[] } {
  const calls: string[] = [];
  const send: Transport = async (path, init) => {
    const key = `${init.method} ${path}`;
    calls.push(init.body ? `${key} ${init.body}` : key);
    const route = routes[key];
    if (!route) {
      return reply(404, { error: { code: 'not_found', message: key } });
    }
    const r = route(init.body ? JSON.parse(init.body) : undefined);
    return reply(r.status ?? 200, r.json);
  };
  return { api: new TreApi(send), calls };
}

const config = {
  project: 'p1',
  mode: 'demo',
  kms: true,
  desktopUrl: '/desktop/',
  exportPath: '/data/p1/export',
};

const project = (id: string, over: Partial<MyProject> = {}): MyProject => ({
  id,
  title: `Project ${id}`,
  pi: 'pia',
  role: 'researcher',
  state: 'active',
  consent: { complete: true, dataOwners: [{ username: 'dora', consentedAt: '2026-01-02' }] },
  window: { validFrom: '2026-01-01T00:00:00Z', validUntil: '2027-01-01T00:00:00Z', open: true },
  epoch: 1,
  keyWrapped: true,
  keyRelease: { allowed: true },
  awaitingGrant: null,
  grantsToComplete: [],
  ...over,
});

function mount(w: Widget): void {
  Widget.attach(w, document.body);
}

const q = (w: Widget, sel: string): HTMLElement[] => [...w.node.querySelectorAll<HTMLElement>(sel)];

describe('Projects panel', () => {
  test('lists role, consent and window; switching posts the project; denials disable it', async () => {
    let current = 'p1';
    const { api, calls } = server({
      'GET config': () => ({ json: { ...config, project: current } }),
      'GET kms/v1/me/projects': () => ({
        json: [
          project('p1'),
          project('p2', {
            role: 'data_owner',
            consent: { complete: false, dataOwners: [{ username: 'dora', consentedAt: null }] },
          }),
          project('p3', { keyRelease: { allowed: false, reason: 'outside_window' } }),
        ],
      }),
      'POST project': (b) => {
        current = (b as { project: string }).project;
        return { json: { project: current, restart: false } };
      },
    });
    const panel = new ProjectsPanel(api);
    mount(panel);
    await panel.refresh();
    const rows = q(panel, '[data-project]');
    expect(rows.map((r) => r.dataset.project)).toEqual(['p1', 'p2', 'p3']);
    expect(rows[0]!.textContent).toContain('current project');
    expect(rows[1]!.textContent).toContain('role: data owner');
    expect(rows[1]!.textContent).toContain('awaiting consent of dora');
    expect(rows[0]!.textContent).toContain('window: 2026-01-01 – 2027-01-01');
    expect(rows[2]!.textContent).toContain('no access: outside_window');
    const p3Button = rows[2]!.querySelector('button')!;
    expect(p3Button.hasAttribute('disabled')).toBe(true);
    rows[1]!.querySelector('button')!.click();
    await new Promise((r) => setTimeout(r, 20));
    await panel.refresh();
    expect(calls).toContain('POST project {"project":"p2"}');
    expect(q(panel, '.jp-tre-current')[0]!.dataset.project).toBe('p2');
  });

  test('in a hub the switch navigates to the spawn URL', async () => {
    const went: string[] = [];
    const { api } = server({
      'GET config': () => ({ json: config }),
      'GET kms/v1/me/projects': () => ({ json: [project('p1'), project('p2')] }),
      'POST project': () => ({
        json: { project: 'p2', restart: true, next: '/hub/spawn/rex?project=p2' },
      }),
    });
    const panel = new ProjectsPanel(api, (u) => {
      went.push(u);
    });
    mount(panel);
    await panel.refresh();
    await panel.switchTo('p2');
    expect(went).toEqual(['/hub/spawn/rex?project=p2']);
  });

  test('the switch opens the spawn form only once the hub shows it (this server stopped)', async () => {
    const answers = ['redirect', 'error', 'redirect', 'form'];
    const asked: string[] = [];
    const fake = (async (url: string | URL | Request, init?: RequestInit) => {
      asked.push(`${String(url)} ${init?.redirect}`);
      const a = answers.shift();
      if (a === 'error') throw new TypeError('connection reset');
      return a === 'redirect'
        ? ({ type: 'opaqueredirect', status: 0 } as Response)
        : ({ type: 'basic', status: 200 } as Response);
    }) as typeof fetch;
    expect(
      await whenServerStopped('/hub/spawn/rex?project=p2', { fetch: fake, intervalMs: 1 }),
    ).toBe(true);
    expect(asked).toEqual(Array(4).fill('/hub/spawn/rex?project=p2 manual'));
    // A hub that never shows the form: give up after the timeout (the page then goes anyway).
    const never = (async () => ({ type: 'opaqueredirect', status: 0 }) as Response) as typeof fetch;
    expect(await whenServerStopped('/x', { fetch: never, intervalMs: 1, timeoutMs: 20 })).toBe(
      false,
    );
  });

  test('a KMS error is shown with its reason', async () => {
    const { api } = server({
      'GET config': () => ({ json: config }),
      'GET kms/v1/me/projects': () => ({
        status: 403,
        json: {
          error: { code: 'forbidden', message: 'training expired', reason: 'training_expired' },
        },
      }),
    });
    const panel = new ProjectsPanel(api);
    mount(panel);
    await panel.refresh();
    expect(panel.node.querySelector('.jp-tre-error')!.textContent).toBe(
      'training expired (training_expired)',
    );
  });
});

describe('Keys panel', () => {
  test('fingerprint, session state, files, vault and completable grants', async () => {
    let completed = 0;
    const { api, calls } = server({
      'GET config': () => ({ json: config }),
      'GET kms/v1/me': () => ({
        json: { username: 'pia', kek: { kid: 'SHA256:abc', kem: 'x25519' } },
      }),
      'GET keys': () => ({ json: { keyAgent: true, unlocked: true, files: 12, readable: 11 } }),
      'GET kms/v1/me/vault': () => ({
        json: { threshold: 2, shares: [{ trustee: 't1' }, { trustee: 't2' }, { trustee: 't3' }] },
      }),
      'GET kms/v1/me/projects': () => ({
        json: [
          project('p1', {
            role: 'pi',
            grantsToComplete:
              completed > 0
                ? []
                : [{ id: 7, username: 'newbie', role: 'researcher', epoch: 1, kek: { kid: 'k' } }],
          }),
        ],
      }),
      'POST grants': () => {
        completed = 1;
        return {
          json: {
            completed: [{ id: 7, username: 'newbie', epoch: 1 }],
            skipped: [{ id: 8, username: 'nokey', reason: 'no key yet' }],
          },
        };
      },
    });
    const panel = new KeysPanel(api);
    mount(panel);
    await panel.refresh();
    const fact = (k: string) => panel.node.querySelector(`[data-fact="${k}"]`)!.textContent;
    expect(fact('fingerprint')).toBe('SHA256:abc');
    expect(fact('unlocked')).toMatch(/^unlocked/);
    expect(fact('files')).toBe('11 of 12');
    expect(fact('vault')).toBe('2 of 3: t1, t2, t3');
    expect(q(panel, '[data-grant]').map((g) => g.textContent)).toEqual(['newbie (researcher)']);
    q(panel, '[data-action="complete-grants"]')[0]!.click();
    await new Promise((r) => setTimeout(r, 20));
    await panel.refresh();
    expect(calls).toContain('POST grants {"project":"p1"}');
    expect(q(panel, '[data-grant]')).toHaveLength(0);
    expect(panel.node.querySelector('.jp-tre-info')!.textContent).toBe(
      'Completed 1 grant(s). Not completed: nokey: no key yet.',
    );
  });

  test('no vault and no key agent are said plainly', async () => {
    const { api } = server({
      'GET config': () => ({ json: config }),
      'GET kms/v1/me': () => ({ json: { username: 'rex', kek: null } }),
      'GET keys': () => ({ json: { keyAgent: false, unlocked: false, files: 0, readable: 0 } }),
      'GET kms/v1/me/projects': () => ({ json: [project('p1')] }),
    });
    const panel = new KeysPanel(api);
    mount(panel);
    await panel.refresh();
    const fact = (k: string) => panel.node.querySelector(`[data-fact="${k}"]`)!.textContent;
    expect(fact('fingerprint')).toBe('no key set up yet');
    expect(fact('unlocked')).toMatch(/^locked/);
    expect(fact('vault')).toBe('not set up');
  });
});

const parameters = { threshold: 10, pRatio: 0.1, nkN: 2, nkK: 0.9, zerosAreDisclosive: true };
const sdcPass: FileCheck = {
  v: 1,
  parameters,
  path: 'a.csv',
  shape: 'frequency',
  verdict: 'pass' as const,
  summary: { pass: 2, review: 0, fail: 0 },
  cells: [],
  hits: [],
};
const sdcFail: FileCheck = {
  v: 1,
  parameters,
  path: 'b.csv',
  shape: 'frequency',
  verdict: 'fail' as const,
  summary: { pass: 1, review: 0, fail: 1 },
  cells: [
    {
      ref: 'B/admitted',
      labels: ['B', 'admitted'],
      count: 4,
      verdict: 'fail' as const,
      hits: [{ rule: 'threshold', verdict: 'fail' as const, detail: 'count 4 < 10' }],
    },
  ],
  hits: [],
};

function request(state: string, over: Partial<EgressRequest> = {}): EgressRequest {
  return {
    id: 3,
    projectId: 'p1',
    requester: 'rex',
    title: 'Admissions',
    state,
    round: 1,
    updatedAt: '',
    reviewers: [
      { username: 'pia', role: 'pi', done: false },
      { username: 'dora', role: 'data_owner', done: false },
    ],
    files: [
      { fileId: 'f1', path: 'a.csv', size: 30, sdc: sdcPass, votes: [], justifications: [] },
      { fileId: 'f2', path: 'b.csv', size: 30, sdc: sdcFail, votes: [], justifications: [] },
    ],
    comments: [],
    ...over,
  };
}

describe('Egress panel', () => {
  test('export folder verdicts, filing, justification and submit as the requester', async () => {
    let state = 'none';
    const { api, calls } = server({
      'GET config': () => ({ json: config }),
      'GET kms/v1/me': () => ({ json: { username: 'rex', kek: null } }),
      'GET export': () => ({
        json: {
          files: [
            { path: 'a.csv', size: 30, sdc: sdcPass },
            { path: 'b.csv', size: 30, sdc: sdcFail },
          ],
        },
      }),
      'GET kms/v1/projects/p1/egress': () => ({
        json: state === 'none' ? [] : [{ ...request(state), mine: true }],
      }),
      'GET kms/v1/projects/p1/egress/3': () => ({ json: request(state) }),
      'GET kms/v1/me/reviews': () => ({ json: [] }),
      'POST egress': () => {
        state = 'draft';
        return { json: request('draft') };
      },
      'POST kms/v1/projects/p1/egress/3/justifications': () => ({ json: request('draft') }),
      'POST kms/v1/projects/p1/egress/3/submit': () => {
        state = 'submitted';
        return { json: request('submitted') };
      },
    });
    const panel = new EgressPanel(api);
    mount(panel);
    await panel.refresh();
    const exp = panel.node.querySelector('[data-section="export"]')!;
    expect(
      [...exp.querySelectorAll('[data-file]')].map(
        (f) => f.querySelector('[data-verdict]')!.textContent,
      ),
    ).toEqual(['pass', 'fail']);
    expect(exp.textContent).toContain('B/admitted: threshold (count 4 < 10)');
    (exp.querySelector('[data-field="title"]') as HTMLInputElement).value = 'Admissions by ward';
    (exp.querySelector('[data-action="file"]') as HTMLElement).click();
    await new Promise((r) => setTimeout(r, 20));
    await panel.refresh();
    expect(calls).toContain('POST egress {"title":"Admissions by ward"}');
    const mine = panel.node.querySelector('[data-section="mine"] [data-request="3"]')!;
    expect(mine.getAttribute('data-state')).toBe('draft');
    const input = mine.querySelector('[data-justify="B/admitted|threshold"]') as HTMLInputElement;
    input.value = 'ward B is a whole hospital';
    (input.parentElement!.querySelector('[data-action="justify"]') as HTMLElement).click();
    await new Promise((r) => setTimeout(r, 20));
    expect(calls).toContain(
      'POST kms/v1/projects/p1/egress/3/justifications {"fileId":"f2","cell":"B/admitted","rule":"threshold","text":"ward B is a whole hospital"}',
    );
    await panel.refresh();
    (
      panel.node.querySelector('[data-section="mine"] [data-action="submit"]') as HTMLElement
    ).click();
    await new Promise((r) => setTimeout(r, 20));
    await panel.refresh();
    expect(panel.node.querySelector('[data-request="3"]')!.getAttribute('data-state')).toBe(
      'submitted',
    );
    expect(panel.node.querySelector('[data-section="mine"] [data-action="submit"]')).toBeNull();
  });

  test('a reviewer votes per file and decides inside lab', async () => {
    const { api, calls } = server({
      'GET config': () => ({ json: config }),
      'GET kms/v1/me': () => ({ json: { username: 'pia', kek: null } }),
      'GET export': () => ({ json: { files: [] } }),
      'GET kms/v1/projects/p1/egress': () => ({ json: [{ ...request('reviewed') }] }),
      'GET kms/v1/me/reviews': () => ({ json: [{ projectId: 'p1', id: 3, state: 'reviewed' }] }),
      'GET kms/v1/projects/p1/egress/3': () => ({ json: request('reviewed') }),
      'POST kms/v1/projects/p1/egress/3/votes': () => ({ json: request('reviewed') }),
      'POST kms/v1/projects/p1/egress/3/decision': () => ({ json: request('approved') }),
    });
    const panel = new EgressPanel(api);
    mount(panel);
    await panel.refresh();
    const item = panel.node.querySelector('[data-review="3"]')!;
    expect(item.textContent).toContain('B/admitted: threshold');
    (item.querySelectorAll('[data-action="request-changes"]')[1] as HTMLElement).click();
    await new Promise((r) => setTimeout(r, 20));
    expect(calls).toContain(
      'POST kms/v1/projects/p1/egress/3/votes {"fileId":"f2","vote":"request_changes"}',
    );
    (
      panel.node.querySelector('[data-review="3"] [data-action="decide-approve"]') as HTMLElement
    ).click();
    await new Promise((r) => setTimeout(r, 20));
    expect(calls).toContain('POST kms/v1/projects/p1/egress/3/decision {"decision":"approve"}');
  });

  test('a returned request of mine asks once to lift its freeze; an error is shown', async () => {
    const { api, calls } = server({
      'GET config': () => ({ json: config }),
      'GET kms/v1/me': () => ({ json: { username: 'rex', kek: null } }),
      'GET export': () => ({ json: { files: [] } }),
      'GET kms/v1/projects/p1/egress': () => ({
        json: [
          { ...request('returned'), id: 3 },
          { ...request('submitted'), id: 4 },
        ],
      }),
      'GET kms/v1/projects/p1/egress/3': () => ({ json: request('returned') }),
      'GET kms/v1/projects/p1/egress/4': () => ({ json: request('submitted', { id: 4 }) }),
      'GET kms/v1/me/reviews': () => ({ json: [] }),
      'POST egress/lift': () => ({
        status: 502,
        json: { error: { code: 'agent_unreachable', message: 'the key agent did not answer' } },
      }),
    });
    const panel = new EgressPanel(api);
    mount(panel);
    await panel.refresh();
    await new Promise((r) => setTimeout(r, 20));
    await panel.refresh();
    expect(calls.filter((c) => c.startsWith('POST egress/lift'))).toEqual([
      'POST egress/lift {"requestId":3}',
    ]);
    expect(panel.node.querySelector('.jp-tre-status')!.textContent).toContain(
      'the key agent did not answer',
    );
  });

  test('a reviewer opens a filed file: its text under the file, or a refusal', async () => {
    const { api, calls } = server({
      'GET config': () => ({ json: config }),
      'GET kms/v1/me': () => ({ json: { username: 'dora', kek: null } }),
      'GET export': () => ({ json: { files: [] } }),
      'GET kms/v1/projects/p1/egress': () => ({ json: [] }),
      'GET kms/v1/me/reviews': () => ({ json: [{ projectId: 'p1', id: 3, state: 'submitted' }] }),
      'GET kms/v1/projects/p1/egress/3': () => ({ json: request('submitted') }),
      'POST egress/review': (b) =>
        (b as { fileId: string }).fileId === 'f1'
          ? { json: { path: 'a.csv', size: 30, verified: true, text: 'ward,n\nA,40\n' } }
          : {
              status: 409,
              json: { error: { code: 'changed', message: 'b.csv is not the filed file' } },
            },
    });
    const panel = new EgressPanel(api);
    mount(panel);
    await panel.refresh();
    const open = (i: number) =>
      (
        panel.node.querySelectorAll('[data-review="3"] [data-action="open-file"]')[i] as HTMLElement
      ).click();
    open(0);
    await new Promise((r) => setTimeout(r, 30));
    expect(calls).toContain('POST egress/review {"requestId":3,"fileId":"f1"}');
    expect(panel.node.querySelector('[data-opened="f1"]')!.textContent).toBe('ward,n\nA,40\n');
    open(1);
    await new Promise((r) => setTimeout(r, 30));
    expect(panel.node.querySelector('[data-opened="f2"]')).toBeNull();
    expect(panel.node.querySelector('.jp-tre-status')!.textContent).toContain(
      'b.csv is not the filed file',
    );
  });
});
