import { h } from './dom.js';
import { TrePanel } from './panel.js';

/** The graphical desktop of this session (noVNC through the job agent's clipboard filter). */
export class DesktopPanel extends TrePanel {
  constructor(private readonly open: () => void) {
    super('tre-desktop', 'Desktop');
  }

  protected async render(): Promise<Node[]> {
    return [
      h(
        'p',
        {},
        'The desktop runs in this session, with the same data and no network. Copy and paste ' +
          'between the desktop and your computer is blocked.',
      ),
      h(
        'button',
        { class: 'jp-mod-styled jp-tre-button', 'data-action': 'open-desktop', onclick: this.open },
        'Open the desktop in a tab',
      ),
    ];
  }
}
