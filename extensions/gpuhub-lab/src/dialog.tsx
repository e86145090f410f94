/**
 * The "Run as distributed job" dialog: a form over the live options of the jobs service.
 */
import { Dialog, ReactWidget } from '@jupyterlab/apputils';
import { Message } from '@lumino/messaging';
import * as React from 'react';

import {
  FRAMEWORK_LABELS,
  IChoice,
  IFormState,
  IProblem,
  frameworkChoices,
  gpuCountChoices,
  gpuTypeChoices,
  groupChoices,
  timeLimitText,
  totalGpus,
  validate
} from './choices';
import { JobsClient } from './client';
import { errorMessage } from './errors';
import type { Framework, IJobOptions } from './types';

/** How often the quota shown in the open dialog is refreshed. */
export const OPTIONS_REFRESH_MS = 5000;

/** Element ids (also `data-testid`s) of the form fields. */
export const FIELD_IDS: Record<keyof IFormState, string> = {
  framework: 'gpuhub-job-framework',
  workers: 'gpuhub-job-workers',
  gpusPerWorker: 'gpuhub-job-gpus',
  gpuType: 'gpuhub-job-gpu-type',
  group: 'gpuhub-job-group',
  argsText: 'gpuhub-job-args'
};

function optionLabel<T>(choice: IChoice<T>): string {
  return choice.reason ? `${choice.label} — ${choice.reason}` : choice.label;
}

function Num(props: { value: number | null; width?: number }): JSX.Element {
  return (
    <span className="gpuhub-Num" style={{ minWidth: `${props.width ?? 3}ch` }}>
      {props.value === null ? '∞' : props.value}
    </span>
  );
}

interface IFieldProps {
  field: keyof IFormState;
  label: string;
  problems: IProblem[];
  hint?: string;
  children: React.ReactNode;
}

/** One labelled row: label, control, and the problem (or hint) under it. */
function Field(props: IFieldProps): JSX.Element {
  const problem = props.problems.find(p => p.field === props.field);
  const noteId = `${FIELD_IDS[props.field]}-note`;
  return (
    <div className="gpuhub-Field">
      <label htmlFor={FIELD_IDS[props.field]}>{props.label}</label>
      <div className="gpuhub-Field-control">
        {props.children}
        <div
          id={noteId}
          className={
            problem
              ? 'gpuhub-Field-note gpuhub-mod-problem'
              : 'gpuhub-Field-note'
          }
        >
          {problem ? problem.message : (props.hint ?? '\u00a0')}
        </div>
      </div>
    </div>
  );
}

interface IQuotaProps {
  options: IJobOptions;
  need: number;
  updated: Date;
  refreshError: string | null;
}

/** The quota left, live; fixed-width numbers so refreshes do not move the layout. */
function QuotaSummary(props: IQuotaProps): JSX.Element {
  const { options } = props;
  return (
    <section
      className="gpuhub-Quota"
      aria-labelledby="gpuhub-quota-title"
      data-testid="gpuhub-job-quota"
    >
      <h3 id="gpuhub-quota-title" className="gpuhub-Quota-title">
        GPUs left now
        <span className="gpuhub-Quota-updated">
          updated{' '}
          <span className="gpuhub-Num">
            {props.updated.toLocaleTimeString([], { hour12: false })}
          </span>
        </span>
      </h3>
      <table className="gpuhub-Quota-table">
        <tbody>
          {options.groups.map(g => (
            <tr
              key={`g-${g.group}`}
              data-testid={`gpuhub-quota-group-${g.group}`}
            >
              <th scope="row">Group {g.group}</th>
              <td>
                <Num value={g.left} /> of <Num value={g.quota} /> left
              </td>
            </tr>
          ))}
          <tr>
            <th scope="row">You</th>
            <td>
              <Num value={options.user_left} />{' '}
              {options.user_left === null ? 'no personal limit' : 'left'}
            </td>
          </tr>
          {options.gpu_types.map(t => (
            <tr key={`t-${t.slug}`}>
              <th scope="row">{t.display_name}</th>
              <td>
                <Num value={t.free} /> of <Num value={t.total} /> free
              </td>
            </tr>
          ))}
          <tr className="gpuhub-Quota-need">
            <th scope="row">This job</th>
            <td>
              <Num value={props.need} /> GPU{props.need === 1 ? '' : 's'}
            </td>
          </tr>
        </tbody>
      </table>
      <div className="gpuhub-Quota-error" role="status">
        {props.refreshError
          ? `Could not refresh: ${props.refreshError}`
          : '\u00a0'}
      </div>
    </section>
  );
}

interface IFormProps {
  options: IJobOptions;
  state: IFormState;
  path: string;
  updated: Date;
  refreshError: string | null;
  onChange: (patch: Partial<IFormState>) => void;
}

function RunJobForm(props: IFormProps): JSX.Element {
  const { options, state, onChange } = props;
  const problems = validate(options, state);
  const gpus = state.gpusPerWorker > 0;
  const limit = timeLimitText(options, state);
  const describedBy = (field: keyof IFormState) => `${FIELD_IDS[field]}-note`;
  return (
    <form
      className="gpuhub-RunJobForm"
      aria-label="Run as distributed job"
      onSubmit={event => event.preventDefault()}
    >
      <p className="gpuhub-RunJobForm-intro">
        Runs <code>{props.path}</code> on several workers with the same image
        and files; the notebook is saved first.
        {options.image && (
          <>
            {' '}
            Image: <strong>{options.image.display_name}</strong>.
          </>
        )}
      </p>
      <div className="gpuhub-RunJobForm-columns">
        <div className="gpuhub-RunJobForm-fields">
          <Field field="framework" label="Framework" problems={problems}>
            <select
              id={FIELD_IDS.framework}
              data-testid={FIELD_IDS.framework}
              aria-describedby={describedBy('framework')}
              value={state.framework}
              onChange={e =>
                onChange({ framework: e.target.value as Framework })
              }
            >
              {frameworkChoices(options).map(c => (
                <option key={c.value} value={c.value} disabled={c.disabled}>
                  {optionLabel(c)}
                </option>
              ))}
            </select>
          </Field>
          <Field
            field="workers"
            label="Workers"
            problems={problems}
            hint={`1 to ${options.max_workers}`}
          >
            <input
              id={FIELD_IDS.workers}
              data-testid={FIELD_IDS.workers}
              aria-describedby={describedBy('workers')}
              type="number"
              inputMode="numeric"
              min={1}
              max={options.max_workers}
              step={1}
              value={Number.isNaN(state.workers) ? '' : state.workers}
              onChange={e =>
                onChange({ workers: parseInt(e.target.value, 10) })
              }
            />
          </Field>
          <Field
            field="gpusPerWorker"
            label="GPUs per worker"
            problems={problems}
          >
            <select
              id={FIELD_IDS.gpusPerWorker}
              data-testid={FIELD_IDS.gpusPerWorker}
              aria-describedby={describedBy('gpusPerWorker')}
              value={String(state.gpusPerWorker)}
              onChange={e =>
                onChange({ gpusPerWorker: Number(e.target.value) })
              }
            >
              {gpuCountChoices(options, state).map(c => (
                <option
                  key={c.value}
                  value={String(c.value)}
                  disabled={c.disabled}
                >
                  {optionLabel(c)}
                </option>
              ))}
            </select>
          </Field>
          <Field
            field="gpuType"
            label="GPU type"
            problems={problems}
            hint={gpus ? undefined : 'not used by CPU-only jobs'}
          >
            <select
              id={FIELD_IDS.gpuType}
              data-testid={FIELD_IDS.gpuType}
              aria-describedby={describedBy('gpuType')}
              value={state.gpuType ?? ''}
              disabled={!gpus || options.gpu_types.length === 0}
              onChange={e => onChange({ gpuType: e.target.value || null })}
            >
              {options.gpu_types.length === 0 && (
                <option value="">none on this hub</option>
              )}
              {gpuTypeChoices(options, state).map(c => (
                <option key={c.value} value={c.value} disabled={c.disabled}>
                  {optionLabel(c)}
                </option>
              ))}
            </select>
          </Field>
          <Field field="group" label="Group to charge" problems={problems}>
            <select
              id={FIELD_IDS.group}
              data-testid={FIELD_IDS.group}
              aria-describedby={describedBy('group')}
              value={state.group ?? ''}
              disabled={options.groups.length === 0}
              onChange={e => onChange({ group: e.target.value || null })}
            >
              {options.groups.length === 0 && (
                <option value="">no group quota</option>
              )}
              {groupChoices(options, state).map(c => (
                <option key={c.value} value={c.value} disabled={c.disabled}>
                  {optionLabel(c)}
                </option>
              ))}
            </select>
          </Field>
          <Field
            field="argsText"
            label="Arguments"
            problems={problems}
            hint={'optional, split like a shell: --epochs 3 --name "my run"'}
          >
            <input
              id={FIELD_IDS.argsText}
              data-testid={FIELD_IDS.argsText}
              aria-describedby={describedBy('argsText')}
              type="text"
              spellCheck={false}
              autoComplete="off"
              placeholder="--epochs 3"
              value={state.argsText}
              onChange={e => onChange({ argsText: e.target.value })}
            />
          </Field>
        </div>
        <QuotaSummary
          options={options}
          need={gpus ? totalGpus(state) : 0}
          updated={props.updated}
          refreshError={props.refreshError}
        />
      </div>
      <p className="gpuhub-RunJobForm-summary" aria-live="polite">
        {FRAMEWORK_LABELS[state.framework]} ·{' '}
        {Number.isNaN(state.workers) ? '?' : state.workers} worker
        {state.workers === 1 ? '' : 's'} ×{' '}
        {gpus
          ? `${state.gpusPerWorker} GPU${state.gpusPerWorker === 1 ? '' : 's'}`
          : 'CPU'}
        {limit !== null ? ` · ends after ${limit} (time limit)` : ''}
        {problems.length > 0 ? ' — fix the marked fields to submit' : ''}
      </p>
    </form>
  );
}

export interface IRunJobBodyOptions {
  client: JobsClient;
  options: IJobOptions;
  state: IFormState;
  path: string;
}

/** The dialog body: holds the form state and refreshes the options while open. */
export class RunJobBody
  extends ReactWidget
  implements Dialog.IBodyWidget<IFormState>
{
  constructor(opts: IRunJobBodyOptions) {
    super();
    this.addClass('gpuhub-RunJobBody');
    this._client = opts.client;
    this.options = opts.options;
    this.state = opts.state;
    this._path = opts.path;
  }

  options: IJobOptions;
  state: IFormState;

  /** Called with whether the form can be submitted, after every change. */
  onValidity: ((ok: boolean) => void) | null = null;

  getValue(): IFormState {
    return this.state;
  }

  get isValid(): boolean {
    return validate(this.options, this.state).length === 0;
  }

  dispose(): void {
    this._stop();
    super.dispose();
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    // Capture phase on the document runs before the dialog's own Enter handling.
    document.addEventListener('keydown', this._guardEnter, true);
    this._timer = window.setInterval(
      () => void this.refresh(),
      OPTIONS_REFRESH_MS
    );
    this._notify();
  }

  protected onBeforeDetach(msg: Message): void {
    this._stop();
    super.onBeforeDetach(msg);
  }

  /** Fetch the options (quota left) again. */
  async refresh(): Promise<void> {
    if (this._inFlight || this.isDisposed) {
      return;
    }
    this._inFlight = true;
    try {
      this.options = await this._client.options();
      this._updated = new Date();
      this._refreshError = null;
    } catch (error) {
      this._refreshError = errorMessage(error);
    } finally {
      this._inFlight = false;
    }
    if (!this.isDisposed) {
      this.update();
      this._notify();
    }
  }

  render(): JSX.Element {
    return (
      <RunJobForm
        options={this.options}
        state={this.state}
        path={this._path}
        updated={this._updated}
        refreshError={this._refreshError}
        onChange={patch => {
          this.state = { ...this.state, ...patch };
          this.update();
          this._notify();
        }}
      />
    );
  }

  private _notify(): void {
    this.onValidity?.(this.isValid);
  }

  private _stop(): void {
    document.removeEventListener('keydown', this._guardEnter, true);
    if (this._timer !== null) {
      window.clearInterval(this._timer);
      this._timer = null;
    }
  }

  /** Enter in a field submits only a valid form. */
  private _guardEnter = (event: KeyboardEvent): void => {
    if (
      event.key === 'Enter' &&
      !this.isValid &&
      event.target instanceof Node &&
      this.node.contains(event.target)
    ) {
      event.preventDefault();
      event.stopPropagation();
    }
  };

  private _client: JobsClient;
  private _path: string;
  private _timer: number | null = null;
  private _inFlight = false;
  private _updated = new Date();
  private _refreshError: string | null = null;
}

/**
 * Show the dialog until it is cancelled or accepted with a valid form.
 *
 * @returns the final options and state, or `null` when cancelled.
 */
export async function askJobOptions(
  opts: IRunJobBodyOptions
): Promise<{ options: IJobOptions; state: IFormState } | null> {
  let { options, state } = opts;
  for (;;) {
    const body = new RunJobBody({ ...opts, options, state });
    const dialog = new Dialog<IFormState>({
      title: 'Run as distributed job',
      body,
      buttons: [
        Dialog.cancelButton({ label: 'Cancel' }),
        Dialog.okButton({ label: 'Submit job' })
      ],
      focusNodeSelector: `#${FIELD_IDS.framework}`,
      hasClose: true
    });
    dialog.addClass('gpuhub-RunJobDialog');
    const accept = dialog.node.querySelector<HTMLButtonElement>(
      '.jp-Dialog-footer .jp-mod-accept'
    );
    const cancel = dialog.node.querySelector<HTMLButtonElement>(
      '.jp-Dialog-footer .jp-mod-reject'
    );
    accept?.setAttribute('data-testid', 'gpuhub-job-submit');
    cancel?.setAttribute('data-testid', 'gpuhub-job-dismiss');
    body.onValidity = ok => {
      if (accept) {
        accept.disabled = !ok;
        accept.title = ok ? '' : 'Fix the marked fields first';
      }
    };
    const result = await dialog.launch();
    options = body.options;
    state = body.state;
    if (!result.button.accept) {
      return null;
    }
    if (validate(options, state).length === 0) {
      return { options, state };
    }
    // Accepted while invalid (should not happen: the button is disabled): ask again.
  }
}
