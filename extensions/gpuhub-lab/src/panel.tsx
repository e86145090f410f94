/**
 * The "GPU jobs" side panel: the user's jobs, their state and elapsed time, a live log tail
 * per worker, and cancel.
 */
import { Dialog, ReactWidget, showDialog } from '@jupyterlab/apputils';
import { Message } from '@lumino/messaging';
import * as React from 'react';

import { JobsClient } from './client';
import { errorMessage } from './errors';
import { formatGpus, isActive, jobElapsed, stateText } from './format';
import { jobsIcon } from './icons';
import type { IJob, ILogs } from './types';

/** Poll intervals (ms). */
export const POLL = {
  tick: 1000,
  activeList: 3000,
  idleList: 30000,
  logs: 2000
};

export const LOG_TAIL = 200;

interface ILogViewProps {
  logs: ILogs | null;
  error: string | null;
  active: boolean;
}

/** A log tail that follows new lines while the reader is at the bottom. */
function LogView(props: ILogViewProps): JSX.Element {
  const ref = React.useRef<HTMLPreElement>(null);
  const atBottom = React.useRef(true);
  const lines = props.logs?.lines ?? [];
  React.useLayoutEffect(() => {
    const node = ref.current;
    if (node && atBottom.current) {
      node.scrollTop = node.scrollHeight;
    }
  }, [lines.length, lines[lines.length - 1]]);
  let text: string;
  if (props.logs === null) {
    text = props.error ? '' : 'Loading logs…';
  } else if (lines.length === 0) {
    text = props.active ? 'No output yet.' : 'This worker wrote no output.';
  } else {
    text = lines.join('\n');
  }
  return (
    <>
      <pre
        ref={ref}
        className="gpuhub-LogView"
        data-testid="gpuhub-job-log"
        tabIndex={0}
        aria-label="Log tail"
        onScroll={event => {
          const node = event.currentTarget;
          atBottom.current =
            node.scrollHeight - node.scrollTop - node.clientHeight < 8;
        }}
      >
        {text}
      </pre>
      {props.error && (
        <div className="gpuhub-InlineError" role="alert">
          {props.error}
        </div>
      )}
    </>
  );
}

interface IJobDetailsProps {
  job: IJob;
  worker: number;
  logs: ILogs | null;
  logError: string | null;
  cancelling: boolean;
  onWorker: (worker: number) => void;
  onCancel: () => void;
}

function JobDetails(props: IJobDetailsProps): JSX.Element {
  const { job } = props;
  const workers = Math.max(job.workers, props.logs?.workers ?? 0, 1);
  const selectId = `gpuhub-log-worker-${job.id}`;
  const workerState = (i: number) =>
    job.worker_states.find(w => w.index === i) ?? null;
  return (
    <div className="gpuhub-JobDetails" id={`gpuhub-job-details-${job.id}`}>
      {job.message && (
        <p
          className={
            job.state === 'Failed'
              ? 'gpuhub-JobMessage gpuhub-mod-problem'
              : 'gpuhub-JobMessage'
          }
          data-testid="gpuhub-job-message"
        >
          {job.message}
        </p>
      )}
      <dl className="gpuhub-JobFacts">
        <dt>Notebook</dt>
        <dd title={job.path}>{job.path}</dd>
        <dt>Framework</dt>
        <dd>{job.framework}</dd>
        {job.image && (
          <>
            <dt>Image</dt>
            <dd>{job.image}</dd>
          </>
        )}
        <dt>Id</dt>
        <dd>
          <code>{job.id}</code>
        </dd>
      </dl>
      <div className="gpuhub-LogToolbar">
        <label htmlFor={selectId}>Worker</label>
        <select
          id={selectId}
          data-testid="gpuhub-log-worker"
          value={String(props.worker)}
          onChange={e => props.onWorker(Number(e.target.value))}
        >
          {Array.from({ length: workers }, (_, i) => {
            const ws = workerState(i);
            const detail = ws
              ? ` — ${ws.state}${ws.exit_code !== null ? ` (exit ${ws.exit_code})` : ''}`
              : '';
            return (
              <option key={i} value={String(i)}>
                {`Worker ${i}${i === 0 ? ' (rank 0)' : ''}${detail}`}
              </option>
            );
          })}
        </select>
        <span className="gpuhub-Spacer" />
        {isActive(job.state) && (
          <button
            type="button"
            className="jp-Button jp-mod-styled jp-mod-warn gpuhub-CancelButton"
            data-testid="gpuhub-job-cancel"
            disabled={props.cancelling}
            onClick={props.onCancel}
          >
            {props.cancelling ? 'Cancelling…' : 'Cancel job'}
          </button>
        )}
      </div>
      <LogView
        logs={props.logs}
        error={props.logError}
        active={isActive(job.state)}
      />
    </div>
  );
}

interface IJobRowProps {
  job: IJob;
  now: number;
  selected: boolean;
  onToggle: () => void;
  children?: React.ReactNode;
}

function JobRow(props: IJobRowProps): JSX.Element {
  const { job } = props;
  const elapsed = jobElapsed(job, props.now);
  const state = job.state.toLowerCase();
  return (
    <li
      className={`gpuhub-Job gpuhub-Job--${state}${props.selected ? ' gpuhub-mod-selected' : ''}`}
      data-testid={`gpuhub-job-${job.id}`}
      data-state={job.state}
    >
      <button
        type="button"
        className="gpuhub-JobRow"
        aria-expanded={props.selected}
        aria-controls={`gpuhub-job-details-${job.id}`}
        onClick={props.onToggle}
      >
        <span className="gpuhub-JobRow-top">
          <span className="gpuhub-JobRow-name" title={job.path}>
            {job.name}
          </span>
          <span
            className={`gpuhub-Badge gpuhub-Badge--${state}`}
            data-testid="gpuhub-job-state"
          >
            {stateText(job)}
          </span>
        </span>
        <span className="gpuhub-JobRow-meta">
          <span className="gpuhub-JobRow-elapsed" title={elapsed.label}>
            <span className="gpuhub-VisuallyHidden">{elapsed.label} </span>
            <span className="gpuhub-Num gpuhub-Elapsed">{elapsed.value}</span>
          </span>
          <span className="gpuhub-JobRow-gpus">{formatGpus(job)}</span>
          <span className="gpuhub-JobRow-group">
            {job.group ? `group ${job.group}` : 'no group'}
          </span>
        </span>
      </button>
      {props.selected && props.children}
    </li>
  );
}

/** The side panel. */
export class JobsPanel extends ReactWidget {
  constructor(client: JobsClient) {
    super();
    this._client = client;
    this.id = 'gpuhub-jobs-panel';
    this.addClass('gpuhub-JobsPanel');
    this.node.setAttribute('data-testid', 'gpuhub-jobs-panel');
    this.node.setAttribute('role', 'region');
    this.node.setAttribute('aria-label', 'GPU jobs');
    this.title.icon = jobsIcon;
    this.title.caption = 'GPU jobs';
  }

  get jobs(): readonly IJob[] {
    return this._jobs;
  }

  /** Show a job just submitted: first in the list, selected, logs followed. */
  showJob(job: IJob): void {
    this._jobs = [job, ...this._jobs.filter(j => j.id !== job.id)];
    this._select(job.id);
    void this.refresh();
  }

  /** Fetch the job list now. */
  async refresh(): Promise<void> {
    if (this._listInFlight) {
      return;
    }
    this._listInFlight = true;
    this._lastList = Date.now();
    try {
      this._jobs = await this._client.list();
      this._error = null;
      this._loaded = true;
    } catch (error) {
      this._error = errorMessage(error);
    } finally {
      this._listInFlight = false;
    }
    this.update();
  }

  dispose(): void {
    this._stopTimer();
    super.dispose();
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this._startTimer();
    void this.refresh();
    void this._refreshLogs();
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    if (this.isVisible) {
      this._startTimer();
      void this.refresh();
    }
  }

  protected onAfterHide(msg: Message): void {
    this._stopTimer();
    super.onAfterHide(msg);
  }

  protected onBeforeDetach(msg: Message): void {
    this._stopTimer();
    super.onBeforeDetach(msg);
  }

  render(): JSX.Element {
    const selected = this._jobs.find(j => j.id === this._selected) ?? null;
    return (
      <div className="gpuhub-JobsPanel-content">
        <header className="gpuhub-JobsPanel-header">
          <h2 className="gpuhub-JobsPanel-title">GPU jobs</h2>
          <button
            type="button"
            className="jp-Button jp-mod-styled jp-mod-reject gpuhub-RefreshButton"
            data-testid="gpuhub-jobs-refresh"
            onClick={() => void this.refresh()}
          >
            Refresh
          </button>
        </header>
        <div
          className="gpuhub-JobsPanel-error"
          role="alert"
          data-testid="gpuhub-jobs-error"
        >
          {this._error}
        </div>
        {this._loaded && this._jobs.length === 0 && !this._error && (
          <p className="gpuhub-Empty">
            No jobs yet. Open a notebook and use “Run as distributed job” in its
            toolbar.
          </p>
        )}
        <ul className="gpuhub-JobList" aria-label="Your GPU jobs">
          {this._jobs.map(job => (
            <JobRow
              key={job.id}
              job={job}
              now={this._now}
              selected={job.id === this._selected}
              onToggle={() =>
                this._select(job.id === this._selected ? null : job.id)
              }
            >
              {selected && selected.id === job.id && (
                <JobDetails
                  job={job}
                  worker={this._worker}
                  logs={this._logs}
                  logError={this._logError}
                  cancelling={this._cancelling.has(job.id)}
                  onWorker={worker => {
                    this._worker = worker;
                    this._logs = null;
                    this._logError = null;
                    this.update();
                    void this._refreshLogs();
                  }}
                  onCancel={() => void this._cancel(job)}
                />
              )}
            </JobRow>
          ))}
        </ul>
      </div>
    );
  }

  private _select(id: string | null): void {
    this._selected = id;
    this._worker = 0;
    this._logs = null;
    this._logError = null;
    this.update();
    void this._refreshLogs();
  }

  private async _refreshLogs(): Promise<void> {
    const id = this._selected;
    if (id === null || this._logsInFlight) {
      return;
    }
    const worker = this._worker;
    this._logsInFlight = true;
    this._lastLogs = Date.now();
    try {
      const logs = await this._client.logs(id, worker, LOG_TAIL);
      if (id === this._selected && worker === this._worker) {
        this._logs = logs;
        this._logError = null;
      }
    } catch (error) {
      if (id === this._selected) {
        this._logError = errorMessage(error);
      }
    } finally {
      this._logsInFlight = false;
    }
    this.update();
  }

  private async _cancel(job: IJob): Promise<void> {
    const workers = `${job.workers} worker${job.workers === 1 ? '' : 's'}`;
    const result = await showDialog({
      title: 'Cancel job?',
      body: `Cancel “${job.name}”? Its ${workers} will be stopped; finished output stays in the log.`,
      buttons: [
        Dialog.cancelButton({ label: 'Keep running' }),
        Dialog.warnButton({ label: 'Cancel job' })
      ]
    });
    if (!result.button.accept) {
      return;
    }
    this._cancelling.add(job.id);
    this.update();
    try {
      const cancelled = await this._client.cancel(job.id);
      this._jobs = this._jobs.map(j => (j.id === cancelled.id ? cancelled : j));
      this._error = null;
    } catch (error) {
      this._error = `Could not cancel “${job.name}”: ${errorMessage(error)}`;
    } finally {
      this._cancelling.delete(job.id);
    }
    this.update();
    void this.refresh();
  }

  private _tick = (): void => {
    const now = Date.now();
    const active = this._jobs.some(j => isActive(j.state));
    const listEvery = active ? POLL.activeList : POLL.idleList;
    if (now - this._lastList >= listEvery) {
      void this.refresh();
    }
    const selected = this._jobs.find(j => j.id === this._selected);
    if (
      selected &&
      (isActive(selected.state) || this._logs === null) &&
      now - this._lastLogs >= POLL.logs
    ) {
      void this._refreshLogs();
    }
    if (active) {
      this._now = now;
      this.update();
    }
  };

  private _startTimer(): void {
    if (this._timer === null) {
      this._timer = window.setInterval(this._tick, POLL.tick);
    }
  }

  private _stopTimer(): void {
    if (this._timer !== null) {
      window.clearInterval(this._timer);
      this._timer = null;
    }
  }

  private _client: JobsClient;
  private _jobs: IJob[] = [];
  private _loaded = false;
  private _error: string | null = null;
  private _selected: string | null = null;
  private _worker = 0;
  private _logs: ILogs | null = null;
  private _logError: string | null = null;
  private _cancelling = new Set<string>();
  private _timer: number | null = null;
  private _now = Date.now();
  private _lastList = 0;
  private _lastLogs = 0;
  private _listInFlight = false;
  private _logsInFlight = false;
}
