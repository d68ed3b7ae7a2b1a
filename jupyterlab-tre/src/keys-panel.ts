import type { TreApi } from './api.js';
import { TreApiError } from './api.js';
import { h } from './dom.js';
import { TrePanel } from './panel.js';
import type { Grant, Vault } from './types.js';

/** My key: fingerprint, whether this session holds it, the vault, grants I can complete. */
export class KeysPanel extends TrePanel {
  constructor(private readonly api: TreApi) {
    super('tre-keys', 'Keys');
  }

  protected async render(): Promise<Node[]> {
    const [config, me, status, projects] = await Promise.all([
      this.api.config(),
      this.api.me(),
      this.api.keys(),
      this.api.myProjects(),
    ]);
    let vault: Vault | null = null;
    try {
      vault = await this.api.vault();
    } catch (e) {
      if (!(e instanceof TreApiError && e.status === 404)) throw e;
    }
    const current = projects.find((p) => p.id === config.project);
    const grants: Grant[] = current?.grantsToComplete ?? [];
    const dl = h(
      'dl',
      { class: 'jp-tre-facts' },
      h('dt', {}, 'Key fingerprint'),
      h('dd', { 'data-fact': 'fingerprint' }, me.kek ? me.kek.kid : 'no key set up yet'),
      h('dt', {}, 'This session'),
      h(
        'dd',
        { 'data-fact': 'unlocked' },
        status.unlocked
          ? 'unlocked (the key stays in the TRE filesystem outside this container)'
          : 'locked: no key agent in this session',
      ),
      h('dt', {}, 'Files accessible'),
      h('dd', { 'data-fact': 'files' }, `${status.readable} of ${status.files}`),
      h('dt', {}, 'Recovery vault'),
      h(
        'dd',
        { 'data-fact': 'vault' },
        vault
          ? `${vault.threshold} of ${vault.shares.length}: ${vault.shares.map((s) => s.trustee).join(', ')}`
          : 'not set up',
      ),
    );
    const grantList = h(
      'div',
      { class: 'jp-tre-grants' },
      h('h3', {}, 'Pending grants I can complete'),
      grants.length === 0
        ? h('p', { class: 'jp-tre-empty' }, 'None.')
        : h(
            'ul',
            { class: 'jp-tre-list' },
            ...grants.map((g) =>
              h(
                'li',
                { 'data-grant': String(g.id) },
                `${g.username} (${g.role ?? 'member'})${g.kek ? '' : ': has no key yet'}`,
              ),
            ),
          ),
      grants.length > 0
        ? h(
            'button',
            {
              class: 'jp-mod-styled jp-tre-button',
              'data-action': 'complete-grants',
              onclick: () =>
                void this.act(async () => {
                  const r = await this.api.completeGrants(config.project);
                  const skipped = r.skipped.map((x) => `${x.username}: ${x.reason}`);
                  return `Completed ${r.completed.length} grant(s).${
                    skipped.length > 0 ? ` Not completed: ${skipped.join('; ')}.` : ''
                  }`;
                }),
            },
            'Complete grants',
          )
        : null,
    );
    return [dl, grantList];
  }
}
