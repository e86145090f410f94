/**
 * The GPU status-bar item ("GPU: 1 × A100 · 73% · group vision · since 09:12"), its details
 * popup with "Give the GPUs back", and the idle warning with "Keep it".  Everything goes
 * through the server extension (`gpuhub/gpu...`), which asks the gpuhub monitor about this
 * server with the server's own token.
 */
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { IStatusBar, Popup, showPopup } from '@jupyterlab/statusbar';
import { ISignal, Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { GpuClient } from './client';
import { errorMessage } from './errors';
import {
  cullMessage,
  formatUtilization,
  gpuTypeName,
  localClock,
  newCulls,
  statusText,
  WarningTracker
} from './gpuformat';
import type { IGpuServer, IGpuStatus } from './types';

/** How often the status is read again (the monitor answers from memory). */
export const REFRESH_MS = 15_000;
/** How soon after an action the status is read again. */
export const AFTER_ACTION_MS = 1_500;

/** The last status read, refreshed on a timer and after actions. */
export class GpuStatusModel {
  constructor(readonly client: GpuClient) {}

  /** This server's GPUs (`null`: a CPU server, or not known yet). */
  get server(): IGpuServer | null {
    return this._status?.server ?? null;
  }

  /** This server's culls by the monitor (newest last). */
  get culled(): IGpuStatus['culled'] {
    return this._status?.culled ?? [];
  }

  /** Emitted after every refresh that changed the status. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  start(): void {
    void this.refresh();
    this._timer = window.setInterval(() => void this.refresh(), REFRESH_MS);
  }

  /** Read the status now; a failure keeps the last one (the monitor may be restarting). */
  async refresh(): Promise<void> {
    let status: IGpuStatus;
    try {
      status = await this.client.status();
    } catch (error) {
      console.warn('gpuhub: GPU status not available:', errorMessage(error));
      return;
    }
    if (JSON.stringify(status) !== JSON.stringify(this._status)) {
      this._status = status;
      this._changed.emit();
    }
  }

  /** Refresh soon (after "keep it" or "give back"). */
  refreshSoon(): void {
    window.setTimeout(() => void this.refresh(), AFTER_ACTION_MS);
  }

  dispose(): void {
    window.clearInterval(this._timer);
  }

  private _status: IGpuStatus | null = null;
  private _timer = 0;
  private _changed = new Signal<this, void>(this);
}

/**
 * Shows each idle warning once, as a notification with "Keep it"; and, once the server is
 * back on CPU (or restarted by hand), why its GPUs went.
 */
export class IdleWarnings {
  constructor(private readonly _model: GpuStatusModel) {
    _model.changed.connect(this._update, this);
  }

  private _update(): void {
    for (const cull of newCulls(this._model.culled, this._told, Date.now())) {
      Notification.info(cullMessage(cull), { autoClose: false });
    }
    for (const change of this._tracker.update(this._model.server)) {
      if (change.kind === 'dismiss') {
        const id = this._shown.get(change.key);
        if (id !== undefined) {
          Notification.dismiss(id);
          this._shown.delete(change.key);
        }
        continue;
      }
      const id = Notification.warning(change.message, {
        autoClose: false,
        actions: [
          {
            label: 'Keep it',
            caption: 'I am still using the GPUs: restart the idle clock',
            displayType: 'accent',
            callback: () => void this._keep()
          }
        ]
      });
      this._shown.set(change.key, id);
    }
  }

  private async _keep(): Promise<void> {
    try {
      const kept = await this._model.client.keep();
      const next =
        kept.cull_at !== null
          ? ` If they stay idle, the next warning comes before ${localClock(kept.cull_at * 1000)}.`
          : '';
      Notification.success(`Kept: this server keeps its GPUs.${next}`, {
        autoClose: 8000
      });
    } catch (error) {
      Notification.error(`Could not keep the GPUs: ${errorMessage(error)}`, {
        autoClose: false
      });
    }
    this._model.refreshSoon();
  }

  private _tracker = new WarningTracker();
  private _told = new Set<string>();
  private _shown = new Map<string, string>();
}

/** Confirm, then restart this server on a CPU profile. */
export async function giveBack(model: GpuStatusModel): Promise<void> {
  const server = model.server;
  if (server === null) {
    return;
  }
  const answer = await showDialog({
    title: 'Give the GPUs back?',
    body:
      `This server gives back its ${server.gpus} × ${gpuTypeName(server)} and restarts ` +
      'on a CPU profile, with the same image when that profile offers it. Running kernels ' +
      'stop; save your work first. Your files stay.',
    buttons: [
      Dialog.cancelButton(),
      Dialog.warnButton({ label: 'Give the GPUs back' })
    ]
  });
  if (!answer.button.accept) {
    return;
  }
  try {
    const done = await model.client.giveBack();
    const image = done.image ? ', same image' : ', its default image';
    Notification.info(
      `Giving the GPUs back: this server restarts on "${done.profile_name}"${image}. ` +
        'JupyterLab reconnects when it is back.',
      { autoClose: false }
    );
  } catch (error) {
    Notification.error(`The GPUs were not given back: ${errorMessage(error)}`, {
      autoClose: false
    });
  }
  model.refreshSoon();
}

/** The details shown when the status-bar item is clicked. */
export function detailsNode(
  server: IGpuServer,
  onGiveBack: () => void
): HTMLElement {
  const node = document.createElement('div');
  node.className = 'gpuhub-GpuDetails';
  node.dataset.testid = 'gpuhub-gpu-details';
  const rows: Array<[string, string]> = [
    ['GPUs', `${server.gpus} × ${gpuTypeName(server)}`],
    ['Devices', server.devices.join(', ') || '–'],
    ['Utilisation now', formatUtilization(server.utilization)],
    ['Group', server.group]
  ];
  const since = server.since ? Date.parse(server.since) : NaN;
  if (Number.isFinite(since)) {
    rows.push(['Since', localClock(since)]);
  }
  if (server.warning) {
    const then =
      server.warning.action === 'restart-on-cpu'
        ? 'restarted on CPU'
        : 'stopped';
    rows.push([
      'Idle',
      `${then} at ${localClock(server.warning.cull_at * 1000)} unless kept`
    ]);
  }
  const policy = server.idle_culling;
  if (policy) {
    const then =
      policy.action === 'restart-on-cpu' ? 'restarted on CPU' : 'stopped';
    rows.push([
      'When idle',
      `${then} after ${policy.idle_minutes} min below ${policy.threshold_percent}%`
    ]);
  }
  const list = document.createElement('dl');
  for (const [term, value] of rows) {
    const dt = document.createElement('dt');
    dt.textContent = term;
    const dd = document.createElement('dd');
    dd.textContent = value;
    list.append(dt, dd);
  }
  const button = document.createElement('button');
  button.className = 'jp-mod-styled jp-mod-warn';
  button.textContent = 'Give the GPUs back';
  button.title = 'Restart this server on a CPU profile';
  button.dataset.testid = 'gpuhub-give-back';
  button.addEventListener('click', onGiveBack);
  node.append(list, button);
  return node;
}

/** The status-bar item: the text, and the details popup on click. */
export class GpuStatusItem extends Widget {
  constructor(private readonly _model: GpuStatusModel) {
    super();
    this.addClass('gpuhub-GpuStatus');
    this.addClass('jp-StatusBar-TextItem');
    this.node.dataset.testid = 'gpuhub-gpu-status';
    this.node.title = 'GPUs of this server (click for details)';
    this.node.setAttribute('role', 'button');
    this.node.tabIndex = 0;
    this.node.addEventListener('click', () => this._open());
    _model.changed.connect(this._render, this);
    this._render();
  }

  dispose(): void {
    this._popup?.dispose();
    super.dispose();
  }

  private _render(): void {
    const server = this._model.server;
    this.node.textContent = server ? statusText(server) : '';
    this.toggleClass(
      'gpuhub-mod-warned',
      server !== null && server.warning !== null
    );
  }

  private _open(): void {
    const server = this._model.server;
    if (server === null) {
      return;
    }
    this._popup?.dispose();
    const body = new Widget({
      node: detailsNode(server, () => {
        this._popup?.dispose();
        void giveBack(this._model);
      })
    });
    this._popup = showPopup({ body, anchor: this, align: 'left' });
  }

  private _popup: Popup | null = null;
}

/** Put the item in the status bar (shown only while this server holds GPUs). */
export function addGpuStatus(statusBar: IStatusBar, client: GpuClient): void {
  const model = new GpuStatusModel(client);
  new IdleWarnings(model);
  const item = new GpuStatusItem(model);
  statusBar.registerStatusItem('gpuhub-lab:gpu-status', {
    item,
    align: 'left',
    rank: 50,
    isActive: () => model.server !== null,
    activeStateChanged: model.changed
  });
  model.start();
}
