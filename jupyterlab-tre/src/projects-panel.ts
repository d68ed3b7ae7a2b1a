import type { TreApi } from './api.js';
import { h } from './dom.js';
import { TrePanel } from './panel.js';
import type { MyProject } from './types.js';

const date = (s: string | null): string => (s ? s.slice(0, 10) : '…');

/**
 * Resolves once the hub shows the spawn form at `url`, i.e. once this server has stopped: while
 * it still runs (or is stopping) the hub redirects the spawn URL to the server or to its pending
 * page, and a form opened then would be lost. Asking is harmless: the spawner never starts from
 * a URL alone (the passphrase is never in one). Gives up after `timeoutMs`.
 */
export async function whenServerStopped(
  url: string,
  opts: { fetch?: typeof fetch; intervalMs?: number; timeoutMs?: number } = {},
): Promise<boolean> {
  const get = opts.fetch ?? fetch;
  const until = Date.now() + (opts.timeoutMs ?? 120_000);
  for (;;) {
    try {
      const r = await get(url, {
        redirect: 'manual',
        credentials: 'same-origin',
        cache: 'no-store',
      });
      if (r.type !== 'opaqueredirect' && r.status >= 200 && r.status < 300) return true;
    } catch {
      // The proxy may drop the connection while the route changes: ask again.
    }
    if (Date.now() >= until) return false;
    await new Promise((res) => setTimeout(res, opts.intervalMs ?? 500));
  }
}

const goWhenStopped = async (url: string): Promise<void> => {
  await whenServerStopped(url);
  window.location.assign(url);
};

/** My projects (role, consent, window, key) and the current one; switching restarts the server. */
export class ProjectsPanel extends TrePanel {
  current = '';

  constructor(
    private readonly api: TreApi,
    private readonly navigate: (url: string) => void | Promise<void> = goWhenStopped,
  ) {
    super('tre-projects', 'Projects');
  }

  protected async render(): Promise<Node[]> {
    const [config, projects] = await Promise.all([this.api.config(), this.api.myProjects()]);
    this.current = config.project;
    if (projects.length === 0) {
      return [h('p', { class: 'jp-tre-empty' }, 'You are not a member of any project yet.')];
    }
    return [h('ul', { class: 'jp-tre-list' }, ...projects.map((p) => this.row(p)))];
  }

  private row(p: MyProject): HTMLElement {
    const isCurrent = p.id === this.current;
    const consent = p.consent.complete
      ? 'consented'
      : `awaiting consent of ${
          p.consent.dataOwners
            .filter((o) => !o.consentedAt)
            .map((o) => o.username)
            .join(', ') || 'a data owner'
        }`;
    const access = p.keyRelease.allowed
      ? 'access allowed'
      : `no access: ${p.keyRelease.reason ?? 'denied'}`;
    return h(
      'li',
      { class: `jp-tre-project${isCurrent ? ' jp-tre-current' : ''}`, 'data-project': p.id },
      h('div', { class: 'jp-tre-row' }, h('strong', {}, p.title), ` (${p.id})`),
      h(
        'div',
        { class: 'jp-tre-meta' },
        `role: ${p.role.replace('_', ' ')} · ${p.state} · ${consent}`,
      ),
      h(
        'div',
        { class: 'jp-tre-meta' },
        `window: ${date(p.window.validFrom)} – ${date(p.window.validUntil)}${p.window.open ? '' : ' (closed now)'} · ${access}`,
      ),
      isCurrent
        ? h('span', { class: 'jp-tre-badge jp-tre-pass' }, 'current project')
        : h(
            'button',
            {
              class: 'jp-mod-styled jp-tre-button',
              'data-action': 'switch',
              disabled: !p.keyRelease.allowed,
              onclick: () => void this.switchTo(p.id),
            },
            'Switch to this project',
          ),
    );
  }

  async switchTo(project: string): Promise<void> {
    await this.act(async () => {
      const r = await this.api.switchProject(project);
      if (r.restart && r.next) {
        this.showInfo('Stopping this server to restart it with the chosen project…');
        await this.navigate(r.next);
        return 'Restarting the server with the chosen project…';
      }
      return `Current project: ${r.project}`;
    });
  }
}
