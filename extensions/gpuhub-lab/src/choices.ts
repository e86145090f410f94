/**
 * Pure logic of the "Run as distributed job" dialog: the form state, which choices are
 * disabled and why, validation, and the request it turns into.
 */
import { ArgsError, splitArgs } from './args';
import type { Framework, IJobOptions, IJobRequest } from './types';

export interface IFormState {
  framework: Framework;
  workers: number;
  gpusPerWorker: number;
  gpuType: string | null;
  group: string | null;
  argsText: string;
}

export interface IChoice<T> {
  value: T;
  label: string;
  disabled: boolean;
  /** Why the choice is disabled (shown next to it), or `null`. */
  reason: string | null;
}

export interface IProblem {
  field: keyof IFormState;
  message: string;
}

export const FRAMEWORK_LABELS: Record<Framework, string> = {
  pytorch: 'PyTorch',
  tensorflow: 'TensorFlow'
};

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** GPUs the job asks for in total. */
export function totalGpus(
  state: Pick<IFormState, 'workers' | 'gpusPerWorker'>
): number {
  const total = Math.max(0, state.workers) * Math.max(0, state.gpusPerWorker);
  return Number.isFinite(total) ? total : 0;
}

export function frameworkChoices(options: IJobOptions): IChoice<Framework>[] {
  return (['pytorch', 'tensorflow'] as Framework[]).map(value => {
    const offered = options.frameworks.includes(value);
    return {
      value,
      label: FRAMEWORK_LABELS[value],
      disabled: !offered,
      reason: offered ? null : 'not offered on this hub'
    };
  });
}

/** GPU types; one is disabled when fewer are free than the job needs. */
export function gpuTypeChoices(
  options: IJobOptions,
  state: IFormState
): IChoice<string>[] {
  const need = totalGpus(state);
  return options.gpu_types.map(t => {
    let reason: string | null = null;
    if (t.total === 0) {
      reason = 'none on this hub';
    } else if (need > t.free) {
      reason = `${t.free} of ${t.total} free, the job needs ${need}`;
    }
    return {
      value: t.slug,
      label: t.display_name,
      disabled: reason !== null,
      reason
    };
  });
}

/** Groups to charge; one is disabled when its quota left is below what the job needs. */
export function groupChoices(
  options: IJobOptions,
  state: IFormState
): IChoice<string>[] {
  const need = totalGpus(state);
  return options.groups.map(g => {
    const reason =
      need > g.left
        ? `${g.left} of ${plural(g.quota, 'GPU')} left, the job needs ${need}`
        : null;
    return {
      value: g.group,
      label: g.group,
      disabled: reason !== null,
      reason
    };
  });
}

/** GPUs per worker; a count is disabled when workers × count exceeds what is left. */
export function gpuCountChoices(
  options: IJobOptions,
  state: IFormState
): IChoice<number>[] {
  const type = options.gpu_types.find(t => t.slug === state.gpuType);
  const maxFree = options.gpu_types.reduce((m, t) => Math.max(m, t.free), 0);
  return options.gpu_counts.map(count => {
    const need = Math.max(1, state.workers) * count;
    let reason: string | null = null;
    if (count > 0) {
      if (options.gpu_types.length === 0) {
        reason = 'no GPUs on this hub';
      } else if (options.user_left !== null && need > options.user_left) {
        reason = `your quota has ${options.user_left} left, ${need} needed`;
      } else if (type !== undefined && need > type.free) {
        reason = `${type.free} ${type.display_name} free, ${need} needed`;
      } else if (type === undefined && need > maxFree) {
        reason = `${maxFree} free, ${need} needed`;
      }
    }
    return {
      value: count,
      label: count === 0 ? '0 (CPU only)' : String(count),
      disabled: reason !== null,
      reason
    };
  });
}

/** The state the dialog opens with: the first choices that fit. */
export function initialState(options: IJobOptions): IFormState {
  const framework: Framework = options.frameworks[0] ?? 'pytorch';
  const workers = Math.max(1, Math.min(2, options.max_workers));
  let state: IFormState = {
    framework,
    workers,
    gpusPerWorker: 0,
    gpuType: options.gpu_types[0]?.slug ?? null,
    group: options.groups[0]?.group ?? null,
    argsText: ''
  };
  // Pick the GPU count against the best free type, then the type and group that fit it.
  const counts = gpuCountChoices(options, { ...state, gpuType: null });
  const one = counts.find(c => c.value === 1 && !c.disabled);
  const firstFit = counts.find(c => c.value > 0 && !c.disabled);
  state = { ...state, gpusPerWorker: (one ?? firstFit)?.value ?? 0 };
  const type = gpuTypeChoices(options, state).find(c => !c.disabled);
  const group = groupChoices(options, state).find(c => !c.disabled);
  return {
    ...state,
    gpuType: type?.value ?? state.gpuType,
    group: group?.value ?? state.group
  };
}

/** Everything that keeps the form from being submitted, per field. */
export function validate(options: IJobOptions, state: IFormState): IProblem[] {
  const problems: IProblem[] = [];
  if (!options.frameworks.includes(state.framework)) {
    problems.push({
      field: 'framework',
      message: `${FRAMEWORK_LABELS[state.framework]} is not offered on this hub.`
    });
  }
  if (
    !Number.isInteger(state.workers) ||
    state.workers < 1 ||
    state.workers > options.max_workers
  ) {
    problems.push({
      field: 'workers',
      message: `Workers must be a whole number from 1 to ${options.max_workers}.`
    });
  }
  const count = gpuCountChoices(options, state).find(
    c => c.value === state.gpusPerWorker
  );
  if (count === undefined) {
    problems.push({
      field: 'gpusPerWorker',
      message: `Choose one of ${options.gpu_counts.join(', ')} GPUs per worker.`
    });
  } else if (count.disabled) {
    problems.push({
      field: 'gpusPerWorker',
      message: `${plural(state.gpusPerWorker, 'GPU')} per worker: ${count.reason}.`
    });
  }
  if (state.gpusPerWorker > 0) {
    const type = gpuTypeChoices(options, state).find(
      c => c.value === state.gpuType
    );
    if (type === undefined) {
      problems.push({ field: 'gpuType', message: 'Choose a GPU type.' });
    } else if (type.disabled) {
      problems.push({
        field: 'gpuType',
        message: `${type.label}: ${type.reason}.`
      });
    }
    if (options.groups.length > 0) {
      const group = groupChoices(options, state).find(
        c => c.value === state.group
      );
      if (group === undefined) {
        problems.push({ field: 'group', message: 'Choose a group to charge.' });
      } else if (group.disabled) {
        problems.push({
          field: 'group',
          message: `Group ${group.label}: ${group.reason}.`
        });
      }
    }
  }
  try {
    splitArgs(state.argsText);
  } catch (error) {
    if (!(error instanceof ArgsError)) {
      throw error;
    }
    problems.push({ field: 'argsText', message: error.message });
  }
  return problems;
}

/** The body of `POST gpuhub/jobs` (the server extension adds the notebook). */
export function toRequest(
  path: string,
  options: IJobOptions,
  state: IFormState
): IJobRequest {
  const gpus = state.gpusPerWorker > 0;
  return {
    path,
    framework: state.framework,
    workers: state.workers,
    gpus_per_worker: state.gpusPerWorker,
    gpu_type: gpus ? state.gpuType : null,
    group: state.group,
    args: splitArgs(state.argsText),
    image: options.image?.slug ?? null
  };
}

/**
 * The time limit of the job as chosen (`"90 min"`), as the service decided it for that GPU
 * type and count; `null` when the job has none (or the service sent no row for it).
 */
export function timeLimitText(
  options: IJobOptions,
  state: Pick<IFormState, 'gpusPerWorker' | 'gpuType'>
): string | null {
  const gpus = state.gpusPerWorker > 0;
  const row = options.time_limits.find(
    t =>
      t.gpus_per_worker === (gpus ? state.gpusPerWorker : 0) &&
      t.gpu_type === (gpus ? state.gpuType : null)
  );
  const minutes = row?.minutes ?? null;
  return minutes === null ? null : `${minutes} min`;
}
