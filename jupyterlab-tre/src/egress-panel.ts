import type { TreApi } from './api.js';
import { formatBytes, h, verdictBadge } from './dom.js';
import { TrePanel } from './panel.js';
import type { CellResult, EgressFile, EgressRequest, FileCheck, OpenedFile } from './types.js';

const OPEN_FOR_REQUESTER = ['draft', 'returned'];
const IN_REVIEW = ['submitted', 'partially_reviewed', 'reviewed'];
/** States in which a request holds no files, so their freeze in trefs can go. */
const UNFROZEN = ['returned', 'withdrawn', 'rejected', 'revoked'];
/** Most requests whose details the panel loads at once. */
const MAX_DETAILED = 10;

/** Cells worth a reviewer's or requester's attention: anything not passing. */
function findings(
  sdc: FileCheck,
): Array<{ cell: CellResult | null; rule: string; detail: string; verdict: string }> {
  const out = sdc.hits.map((x) => ({
    cell: null as CellResult | null,
    rule: x.rule,
    detail: x.detail,
    verdict: x.verdict,
  }));
  for (const c of sdc.cells) {
    for (const x of c.hits)
      out.push({ cell: c, rule: x.rule, detail: x.detail, verdict: x.verdict });
  }
  return out;
}

function checkList(sdc: FileCheck): HTMLElement {
  const f = findings(sdc);
  if (f.length === 0) return h('div', { class: 'jp-tre-meta' }, `${sdc.summary.pass} cells pass`);
  return h(
    'ul',
    { class: 'jp-tre-findings' },
    ...f.map((x) =>
      h(
        'li',
        { 'data-rule': x.rule, 'data-cell': x.cell?.ref ?? '' },
        verdictBadge(x.verdict),
        ` ${x.cell ? x.cell.ref : 'file'}: ${x.rule} (${x.detail})`,
      ),
    ),
  );
}

/** The export folder with its disclosure checks, filing, my requests, and my review queue. */
export class EgressPanel extends TrePanel {
  /** Requests whose freeze this page has asked to lift (the server decides). */
  private readonly lifted = new Set<number>();
  /** Filed files opened for review, by file ID. */
  private readonly opened = new Map<string, OpenedFile>();

  constructor(private readonly api: TreApi) {
    super('tre-egress', 'Egress');
  }

  protected async render(): Promise<Node[]> {
    const config = await this.api.config();
    if (!config.project) return [h('p', { class: 'jp-tre-empty' }, 'Pick a project first.')];
    const [me, exported, mine, reviews] = await Promise.all([
      this.api.me(),
      this.api.exportFiles(),
      this.api.listEgress(config.project),
      this.api.myReviews(),
    ]);
    const myOpen = mine.filter((r) => r.requester === me.username);
    const detailed = await Promise.all(
      myOpen.slice(0, MAX_DETAILED).map((r) => this.api.egress(config.project, r.id)),
    );
    const queue = await Promise.all(
      reviews
        .slice(0, MAX_DETAILED)
        .map((r) => this.api.egress(r.projectId ?? config.project, r.id)),
    );
    for (const r of detailed) {
      if (UNFROZEN.includes(r.state) && !this.lifted.has(r.id)) {
        this.lifted.add(r.id);
        // Returned or ended: the files become editable again. A failure leaves them read-only.
        void this.api.liftFreeze(r.id).catch((e: unknown) => this.showError(e));
      }
    }
    const draft = detailed.find((r) => OPEN_FOR_REQUESTER.includes(r.state));
    return [
      this.exportSection(config.exportPath ?? '', exported.files, draft),
      this.requestsSection(detailed, mine.length > detailed.length),
      this.reviewSection(queue, me.username),
    ];
  }

  private exportSection(
    path: string,
    files: Array<{ path: string; size: number; sdc: FileCheck }>,
    draft: EgressRequest | undefined,
  ): HTMLElement {
    const title = h('input', {
      class: 'jp-mod-styled jp-tre-input',
      'data-field': 'title',
      placeholder: 'What these outputs are',
      value: draft?.title ?? '',
    });
    const failing = files.filter((f) => f.sdc.verdict !== 'pass').length;
    return h(
      'section',
      { class: 'jp-tre-section', 'data-section': 'export' },
      h('h3', {}, 'Export folder'),
      h('div', { class: 'jp-tre-meta' }, path),
      files.length === 0
        ? h('p', { class: 'jp-tre-empty' }, 'Empty: save the outputs you want to take out here.')
        : h(
            'ul',
            { class: 'jp-tre-list' },
            ...files.map((f) =>
              h(
                'li',
                { 'data-file': f.path },
                verdictBadge(f.sdc.verdict),
                ` ${f.path} (${formatBytes(f.size)})`,
                checkList(f.sdc),
              ),
            ),
          ),
      files.length > 0
        ? h(
            'div',
            { class: 'jp-tre-row' },
            title,
            h(
              'button',
              {
                class: 'jp-mod-styled jp-tre-button',
                'data-action': 'file',
                onclick: () =>
                  void this.act(async () => {
                    const r = await this.api.fileEgress(title.value || 'Outputs', draft?.id);
                    return `Request ${r.id} holds ${r.files.length} file(s)${failing ? `, ${failing} needing a justification or a fix` : ''}; submit it when ready.`;
                  }),
              },
              draft ? `Update request ${draft.id}` : 'File a request',
            ),
          )
        : null,
    );
  }

  private requestsSection(requests: EgressRequest[], more: boolean): HTMLElement {
    return h(
      'section',
      { class: 'jp-tre-section', 'data-section': 'mine' },
      h('h3', {}, 'My requests'),
      requests.length === 0
        ? h('p', { class: 'jp-tre-empty' }, 'None yet.')
        : h('ul', { class: 'jp-tre-list' }, ...requests.map((r) => this.myRequest(r))),
      more ? h('p', { class: 'jp-tre-meta' }, `Showing the latest ${MAX_DETAILED}.`) : null,
    );
  }

  private myRequest(r: EgressRequest): HTMLElement {
    const editable = OPEN_FOR_REQUESTER.includes(r.state);
    const files = r.files.map((f) =>
      h(
        'li',
        { 'data-file': f.path },
        verdictBadge(f.sdc.verdict),
        ` ${f.path}`,
        checkList(f.sdc),
        editable ? this.justifyForm(r, f) : null,
        h(
          'div',
          { class: 'jp-tre-meta' },
          f.votes.length
            ? f.votes.map((v) => `${v.reviewer}: ${v.vote.replace('_', ' ')}`).join(' · ')
            : 'no votes yet',
        ),
      ),
    );
    const comments = r.comments.map((c) => h('li', {}, `${c.author}: ${c.text}`));
    return h(
      'li',
      { class: 'jp-tre-request', 'data-request': String(r.id), 'data-state': r.state },
      h(
        'div',
        { class: 'jp-tre-row' },
        h('strong', {}, `#${r.id} ${r.title}`),
        ' ',
        h('span', { class: 'jp-tre-state' }, r.state.replace('_', ' ')),
      ),
      h(
        'div',
        { class: 'jp-tre-meta' },
        `round ${r.round} · reviewers: ${r.reviewers.map((x) => `${x.username}${x.done ? ' ✓' : ''}`).join(', ')}`,
      ),
      h('ul', { class: 'jp-tre-files' }, ...files),
      comments.length ? h('ul', { class: 'jp-tre-comments' }, ...comments) : null,
      editable
        ? h(
            'div',
            { class: 'jp-tre-row' },
            this.button(
              'submit',
              'Submit for review',
              () => this.api.egressAction(r.projectId, r.id, 'submit'),
              'Submitted: the files are frozen and the reviewers told.',
            ),
            this.button(
              'withdraw',
              'Withdraw',
              () => this.api.egressAction(r.projectId, r.id, 'withdraw'),
              'Withdrawn.',
            ),
          )
        : null,
      r.state === 'approved' || r.state === 'released'
        ? h(
            'p',
            { class: 'jp-tre-meta' },
            'Approved: download it outside the TRE with `tre download`.',
          )
        : null,
    );
  }

  private justifyForm(r: EgressRequest, f: EgressFile): HTMLElement | null {
    const failing = f.sdc.cells.filter((c) => c.verdict === 'fail');
    if (failing.length === 0) return null;
    const forms = failing.flatMap((c) =>
      c.hits
        .filter((x) => x.verdict === 'fail')
        .map((x) => {
          const done = f.justifications.find((j) => j.cell === c.ref && j.rule === x.rule);
          if (done)
            return h('div', { class: 'jp-tre-meta' }, `justified ${c.ref} ${x.rule}: ${done.text}`);
          const input = h('input', {
            class: 'jp-mod-styled jp-tre-input',
            'data-justify': `${c.ref}|${x.rule}`,
            placeholder: `Why ${c.ref} (${x.rule}) is safe`,
          });
          return h(
            'div',
            { class: 'jp-tre-row' },
            input,
            this.button('justify', 'Justify', () =>
              this.api.egressAction(r.projectId, r.id, 'justifications', {
                fileId: f.fileId,
                cell: c.ref,
                rule: x.rule,
                text: input.value,
              }),
            ),
          );
        }),
    );
    return h('div', { class: 'jp-tre-justify' }, ...forms);
  }

  private reviewSection(queue: EgressRequest[], me: string): HTMLElement {
    return h(
      'section',
      { class: 'jp-tre-section', 'data-section': 'review' },
      h('h3', {}, 'To review'),
      queue.length === 0
        ? h('p', { class: 'jp-tre-empty' }, 'Nothing waits for you.')
        : h('ul', { class: 'jp-tre-list' }, ...queue.map((r) => this.reviewItem(r, me))),
    );
  }

  private reviewItem(r: EgressRequest, me: string): HTMLElement {
    const inReview = IN_REVIEW.includes(r.state);
    const comment = h('input', {
      class: 'jp-mod-styled jp-tre-input',
      'data-field': 'comment',
      placeholder: 'Comment to the requester',
    });
    return h(
      'li',
      { class: 'jp-tre-request', 'data-review': String(r.id), 'data-state': r.state },
      h(
        'div',
        { class: 'jp-tre-row' },
        h('strong', {}, `#${r.id} ${r.title}`),
        ` by ${r.requester} `,
        h('span', { class: 'jp-tre-state' }, r.state.replace('_', ' ')),
      ),
      h(
        'ul',
        { class: 'jp-tre-files' },
        ...r.files.map((f) => {
          const mine = f.votes.find((v) => v.reviewer === me);
          const opened = this.opened.get(f.fileId);
          return h(
            'li',
            { 'data-file': f.path },
            verdictBadge(f.sdc.verdict),
            ` ${f.path} `,
            this.button('open-file', 'Open', async () => {
              this.opened.set(f.fileId, await this.api.openFiled(r.id, f.fileId));
            }),
            opened
              ? h(
                  'pre',
                  { class: 'jp-tre-opened', 'data-opened': f.fileId },
                  opened.text ?? `${formatBytes(opened.size)}: too large to show here`,
                )
              : null,
            checkList(f.sdc),
            ...f.justifications.map((j) =>
              h('div', { class: 'jp-tre-meta' }, `${j.author} on ${j.cell} ${j.rule}: ${j.text}`),
            ),
            inReview
              ? h(
                  'div',
                  { class: 'jp-tre-row' },
                  mine
                    ? h('span', { class: 'jp-tre-meta' }, `you: ${mine.vote.replace('_', ' ')} `)
                    : null,
                  this.button('approve-file', 'Approve', () =>
                    this.api.egressAction(r.projectId, r.id, 'votes', {
                      fileId: f.fileId,
                      vote: 'approve',
                    }),
                  ),
                  this.button('request-changes', 'Request changes', () =>
                    this.api.egressAction(r.projectId, r.id, 'votes', {
                      fileId: f.fileId,
                      vote: 'request_changes',
                    }),
                  ),
                )
              : null,
          );
        }),
      ),
      inReview
        ? h(
            'div',
            { class: 'jp-tre-row' },
            comment,
            this.button('comment', 'Send', () =>
              this.api.egressAction(r.projectId, r.id, 'comments', {
                text: comment.value,
                visibility: 'requester',
              }),
            ),
          )
        : null,
      r.state === 'reviewed'
        ? h(
            'div',
            { class: 'jp-tre-row' },
            this.button('decide-approve', 'Approve request', () =>
              this.api.egressAction(r.projectId, r.id, 'decision', { decision: 'approve' }),
            ),
            this.button('decide-reject', 'Reject', () =>
              this.api.egressAction(r.projectId, r.id, 'decision', { decision: 'reject' }),
            ),
          )
        : null,
      inReview
        ? this.button('decide-return', 'Return to requester', () =>
            this.api.egressAction(r.projectId, r.id, 'decision', { decision: 'return' }),
          )
        : null,
    );
  }

  private button(
    action: string,
    label: string,
    run: () => Promise<unknown>,
    done?: string,
  ): HTMLElement {
    return h(
      'button',
      {
        class: 'jp-mod-styled jp-tre-button',
        'data-action': action,
        onclick: () =>
          void this.act(async () => {
            await run();
            return done;
          }),
      },
      label,
    );
  }
}
