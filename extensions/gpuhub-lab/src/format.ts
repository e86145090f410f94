/**
 * Pure formatting helpers for the jobs panel (no DOM, no JupyterLab imports).
 */
import type { IJob, JobState } from './types';

const ACTIVE: ReadonlySet<JobState> = new Set<JobState>(['Queued', 'Running']);

/** Whether a job may still change (so the panel keeps polling). */
export function isActive(state: JobState): boolean {
  return ACTIVE.has(state);
}

function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/**
 * A duration as a clock: `0:07`, `12:05`, `1:02:03`, `2d 03:04:05`.
 *
 * Negative or non-finite durations (clock skew, bad dates) read `0:00`.
 */
export function formatDuration(milliseconds: number): string {
  const total =
    Number.isFinite(milliseconds) && milliseconds > 0
      ? Math.floor(milliseconds / 1000)
      : 0;
  const seconds = total % 60;
  const minutes = Math.floor(total / 60) % 60;
  const hours = Math.floor(total / 3600) % 24;
  const days = Math.floor(total / 86400);
  if (days > 0) {
    return `${days}d ${pad2(hours)}:${pad2(minutes)}:${pad2(seconds)}`;
  }
  if (hours > 0) {
    return `${hours}:${pad2(minutes)}:${pad2(seconds)}`;
  }
  return `${minutes}:${pad2(seconds)}`;
}

/**
 * Elapsed time of a job at `now`: running time once started (until it finished), otherwise
 * the time spent waiting since it was created.
 */
export function jobElapsed(
  job: Pick<IJob, 'created' | 'started' | 'finished' | 'state'>,
  now: number
): { label: string; value: string } {
  const end = job.finished ? Date.parse(job.finished) : now;
  if (job.started) {
    return {
      label: isActive(job.state) ? 'running for' : 'ran for',
      value: formatDuration(end - Date.parse(job.started))
    };
  }
  return {
    label: isActive(job.state) ? 'waiting for' : 'waited',
    value: formatDuration(end - Date.parse(job.created))
  };
}

/** `2 × 1 A100 (2 GPUs)`, `2 × CPU`, from a job's shape. */
export function formatGpus(
  job: Pick<IJob, 'workers' | 'gpus_per_worker' | 'gpu_type'>
): string {
  if (job.gpus_per_worker <= 0) {
    return `${job.workers} × CPU`;
  }
  const total = job.workers * job.gpus_per_worker;
  const kind = job.gpu_type ? ` ${job.gpu_type}` : '';
  return `${job.workers} × ${job.gpus_per_worker}${kind} (${total} GPU${total === 1 ? '' : 's'})`;
}

/** The text of a state badge: the state, with the queue position when queued. */
export function stateText(job: Pick<IJob, 'state' | 'queue_position'>): string {
  if (job.state === 'Queued' && job.queue_position !== null) {
    return `Queued #${job.queue_position}`;
  }
  return job.state;
}
