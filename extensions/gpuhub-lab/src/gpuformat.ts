/**
 * Pure helpers of the GPU status-bar item and the idle warning (no DOM, no JupyterLab).
 */
import type { ICulled, IGpuServer, IGpuWarning } from './types';

function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/** `09:12`: a moment as the browser's local wall-clock time. */
export function localClock(epochMs: number): string {
  const d = new Date(epochMs);
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
}

/** `73%`, or `–` while the utilisation is not measured. */
export function formatUtilization(percent: number | null): string {
  return percent === null || !Number.isFinite(percent)
    ? '–'
    : `${Math.round(percent)}%`;
}

/** `A100` (the display name when the monitor sends one, else the slug). */
export function gpuTypeName(
  server: Pick<IGpuServer, 'gpu_type' | 'gpu_type_name'>
): string {
  return server.gpu_type_name || server.gpu_type;
}

/** The status-bar text: `GPU: 1 × A100 · 73% · group vision · since 09:12`. */
export function statusText(server: IGpuServer): string {
  const parts = [
    `GPU: ${server.gpus} × ${gpuTypeName(server)}`,
    formatUtilization(server.utilization),
    `group ${server.group}`
  ];
  const since = server.since ? Date.parse(server.since) : NaN;
  if (Number.isFinite(since)) {
    parts.push(`since ${localClock(since)}`);
  }
  return parts.join(' · ');
}

/** `GPU idle: this server will be stopped at 09:42` (or restarted on CPU). */
export function warningMessage(warning: IGpuWarning): string {
  const what =
    warning.action === 'restart-on-cpu' ? 'restarted on CPU' : 'stopped';
  return `GPU idle: this server will be ${what} at ${localClock(warning.cull_at * 1000)}`;
}

/** What the notification area should do after a status refresh. */
export type WarningChange =
  | { kind: 'show'; key: string; message: string }
  | { kind: 'dismiss'; key: string };

/**
 * One notification per warning: a warning is known by its server and `cull_at`, which stay
 * the same while it lasts ("keep it" or a busy GPU ends it; the next one has a new time).
 */
export class WarningTracker {
  private _current: string | null = null;

  /** The key of the warning shown now, if any. */
  get current(): string | null {
    return this._current;
  }

  /** The changes for the status just read (`null`: a CPU server, or no longer known). */
  update(server: IGpuServer | null): WarningChange[] {
    const warning = server?.warning ?? null;
    const key =
      server && warning ? `${server.server}@${warning.cull_at}` : null;
    if (key === this._current) {
      return [];
    }
    const changes: WarningChange[] = [];
    if (this._current !== null) {
      changes.push({ kind: 'dismiss', key: this._current });
    }
    if (key !== null && warning !== null) {
      changes.push({ kind: 'show', key, message: warningMessage(warning) });
    }
    this._current = key;
    return changes;
  }
}

/** How long after a cull its notice is still worth showing (a later page load stays quiet). */
export const CULL_NOTICE_MS = 60 * 60 * 1000;

/** `Your GPUs sat idle: this server was restarted on CPU at 11:22 (1 × a100 given back).` */
export function cullMessage(cull: ICulled): string {
  const what =
    cull.action === 'restart-on-cpu'
      ? 'this server was restarted on CPU'
      : 'this server was stopped';
  return (
    `Your GPUs sat idle: ${what} at ${localClock(cull.at * 1000)} ` +
    `(${cull.gpus} × ${cull.gpu_type} given back).`
  );
}

/** The culls to tell about now: recent ones not told yet (`told` is updated). */
export function newCulls(
  culled: ICulled[],
  told: Set<string>,
  nowMs: number
): ICulled[] {
  const fresh: ICulled[] = [];
  for (const cull of culled) {
    const key = `${cull.server}@${cull.at}`;
    if (told.has(key)) {
      continue;
    }
    told.add(key);
    if (nowMs - cull.at * 1000 <= CULL_NOTICE_MS) {
      fresh.push(cull);
    }
  }
  return fresh;
}
