import { Widget } from '@lumino/widgets';
import { errorText, h } from './dom.js';

/**
 * A sidebar panel: a title, a body re-rendered by `refresh()`, and one status line for errors
 * and outcomes. Subclasses implement `render()`; every action goes through `act()` so a failure
 * is shown, never swallowed, and the panel shows fresh data afterwards.
 */
export abstract class TrePanel extends Widget {
  protected readonly body: HTMLElement;
  protected readonly status: HTMLElement;
  private pending: Promise<void> | null = null;

  constructor(id: string, label: string) {
    super();
    this.id = id;
    this.addClass('jp-tre-panel');
    this.title.caption = label;
    this.body = h('div', { class: 'jp-tre-body' });
    this.status = h('div', { class: 'jp-tre-status', role: 'status' });
    this.node.append(h('h2', { class: 'jp-tre-heading' }, label), this.status, this.body);
  }

  protected abstract render(): Promise<Node[]>;

  /** Re-reads everything the panel shows; concurrent calls share one round trip. */
  refresh(): Promise<void> {
    if (!this.pending) {
      this.pending = (async () => {
        try {
          const nodes = await this.render();
          this.body.replaceChildren(...nodes);
          this.node.dataset.loaded = 'true';
        } catch (e) {
          this.showError(e);
        } finally {
          this.pending = null;
        }
      })();
    }
    return this.pending;
  }

  protected showError(e: unknown): void {
    this.status.className = 'jp-tre-status jp-tre-error';
    this.status.textContent = errorText(e);
  }

  protected showInfo(text: string): void {
    this.status.className = 'jp-tre-status jp-tre-info';
    this.status.textContent = text;
  }

  protected async act(what: () => Promise<string | void>): Promise<void> {
    try {
      const msg = await what();
      if (msg) this.showInfo(msg);
      else this.status.textContent = '';
    } catch (e) {
      this.showError(e);
      return;
    }
    await this.refresh();
  }
}
