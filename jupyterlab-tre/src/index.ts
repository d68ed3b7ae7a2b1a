/**
 * jupyterlab-tre: the TRE in JupyterLab's left sidebar. Four panels (projects, keys, egress,
 * desktop), their commands in the palette, and settings in the settings registry. Every call
 * goes to the server extension under `tre/api/`, which holds the user's token and reaches the KMS.
 */
import type { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, IFrame, MainAreaWidget } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { TreApi } from './api.js';
import { DesktopPanel } from './desktop-panel.js';
import { EgressPanel } from './egress-panel.js';
import { KeysPanel } from './keys-panel.js';
import type { TrePanel } from './panel.js';
import { ProjectsPanel } from './projects-panel.js';

const PLUGIN_ID = 'jupyterlab-tre:plugin';

export const CommandIds = {
  projects: 'tre:show-projects',
  keys: 'tre:show-keys',
  egress: 'tre:show-egress',
  desktop: 'tre:open-desktop',
  refresh: 'tre:refresh',
} as const;

function transport(): (path: string, init: { method: string; body?: string }) => Promise<Response> {
  const settings = ServerConnection.makeSettings();
  return (path, init) =>
    ServerConnection.makeRequest(URLExt.join(settings.baseUrl, 'tre', 'api', path), init, settings);
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Projects, keys, egress requests and reviews, and the desktop of the TRE.',
  autoStart: true,
  optional: [ICommandPalette, ISettingRegistry],
  activate: async (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    settingRegistry: ISettingRegistry | null,
  ) => {
    const api = new TreApi(transport());
    let desktop: MainAreaWidget<IFrame> | null = null;
    let desktopUrl = URLExt.join(ServerConnection.makeSettings().baseUrl, 'desktop/');

    const openDesktop = (): void => {
      if (desktop && !desktop.isDisposed) {
        app.shell.activateById(desktop.id);
        return;
      }
      // noVNC needs scripts and its own origin's WebSocket; nothing else is allowed.
      const frame = new IFrame({ sandbox: ['allow-scripts', 'allow-same-origin'] });
      frame.url = desktopUrl;
      desktop = new MainAreaWidget({ content: frame });
      desktop.id = 'tre-desktop-tab';
      desktop.title.label = 'Desktop';
      desktop.title.closable = true;
      app.shell.add(desktop, 'main');
      app.shell.activateById(desktop.id);
    };

    const panels: TrePanel[] = [
      new ProjectsPanel(api),
      new KeysPanel(api),
      new EgressPanel(api),
      new DesktopPanel(openDesktop),
    ];
    const labels = ['TRE projects', 'TRE keys', 'TRE egress', 'TRE desktop'];
    panels.forEach((p, i) => {
      p.title.label = labels[i]!.replace('TRE ', '');
      app.shell.add(p, 'left', { rank: 600 + i });
    });

    const show = (p: TrePanel) => () => {
      app.shell.activateById(p.id);
      void p.refresh();
    };
    app.commands.addCommand(CommandIds.projects, {
      label: 'TRE: Show projects',
      execute: show(panels[0]!),
    });
    app.commands.addCommand(CommandIds.keys, {
      label: 'TRE: Show key status',
      execute: show(panels[1]!),
    });
    app.commands.addCommand(CommandIds.egress, {
      label: 'TRE: Show egress requests',
      execute: show(panels[2]!),
    });
    app.commands.addCommand(CommandIds.desktop, {
      label: 'TRE: Open the desktop',
      execute: openDesktop,
    });
    app.commands.addCommand(CommandIds.refresh, {
      label: 'TRE: Refresh panels',
      execute: () => Promise.all(panels.map((p) => p.refresh())),
    });
    if (palette) {
      for (const command of Object.values(CommandIds))
        palette.addItem({ command, category: 'TRE' });
    }

    let timer: number | undefined;
    const schedule = (seconds: number): void => {
      if (timer !== undefined) window.clearInterval(timer);
      timer =
        seconds > 0
          ? window.setInterval(() => {
              for (const p of panels) if (p.isVisible) void p.refresh();
            }, seconds * 1000)
          : undefined;
    };
    schedule(30);
    if (settingRegistry) {
      try {
        const settings = await settingRegistry.load(PLUGIN_ID);
        const apply = (): void => {
          schedule(settings.get('refreshSeconds').composite as number);
          const path = settings.get('desktopPath').composite as string;
          desktopUrl = URLExt.join(ServerConnection.makeSettings().baseUrl, path);
        };
        apply();
        settings.changed.connect(apply);
      } catch (e) {
        console.warn('jupyterlab-tre: settings not loaded', e);
      }
    }
    try {
      const config = await api.config();
      if (config.desktopUrl) desktopUrl = config.desktopUrl;
    } catch (e) {
      console.warn('jupyterlab-tre: server extension unreachable', e);
    }
    await Promise.all(panels.map((p) => p.refresh()));
  },
};

export default plugin;
