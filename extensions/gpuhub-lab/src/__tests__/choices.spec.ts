import {
  IFormState,
  gpuCountChoices,
  gpuTypeChoices,
  groupChoices,
  frameworkChoices,
  initialState,
  timeLimitText,
  toRequest,
  totalGpus,
  validate
} from '../choices';
import type { IJobOptions } from '../types';

const OPTIONS: IJobOptions = {
  frameworks: ['pytorch', 'tensorflow'],
  gpu_types: [
    { slug: 'a100', display_name: 'A100 80GB', free: 3, total: 8 },
    { slug: 't4', display_name: 'T4', free: 6, total: 6 }
  ],
  groups: [
    { group: 'ml', left: 2, quota: 8 },
    { group: 'vision', left: 6, quota: 6 }
  ],
  user_left: 4,
  max_workers: 4,
  gpu_counts: [0, 1, 2, 4],
  image: { slug: 'torch', display_name: 'PyTorch 2' },
  time_limits: [
    { gpu_type: null, gpus_per_worker: 0, minutes: null },
    { gpu_type: 'a100', gpus_per_worker: 1, minutes: 120 },
    { gpu_type: 't4', gpus_per_worker: 1, minutes: 0.5 }
  ]
};

const STATE: IFormState = {
  framework: 'pytorch',
  workers: 2,
  gpusPerWorker: 1,
  gpuType: 'a100',
  group: 'ml',
  argsText: ''
};

describe('choices', () => {
  it('counts the GPUs of the whole job', () => {
    expect(totalGpus({ workers: 3, gpusPerWorker: 2 })).toBe(6);
    expect(totalGpus({ workers: Number.NaN, gpusPerWorker: 2 })).toBe(0);
  });

  it('disables frameworks the hub does not offer', () => {
    const choices = frameworkChoices({ ...OPTIONS, frameworks: ['pytorch'] });
    expect(choices.map(c => [c.value, c.disabled, c.reason])).toEqual([
      ['pytorch', false, null],
      ['tensorflow', true, 'not offered on this hub']
    ]);
  });

  it('disables GPU types with fewer free GPUs than the job needs, saying why', () => {
    const choices = gpuTypeChoices(OPTIONS, { ...STATE, gpusPerWorker: 2 });
    expect(choices).toEqual([
      {
        value: 'a100',
        label: 'A100 80GB',
        disabled: true,
        reason: '3 of 8 free, the job needs 4'
      },
      { value: 't4', label: 'T4', disabled: false, reason: null }
    ]);
  });

  it('disables groups whose quota left is too small', () => {
    const choices = groupChoices(OPTIONS, { ...STATE, workers: 3 });
    expect(choices.map(c => [c.value, c.disabled, c.reason])).toEqual([
      ['ml', true, '2 of 8 GPUs left, the job needs 3'],
      ['vision', false, null]
    ]);
  });

  it('disables GPU counts over the personal quota and over the free GPUs', () => {
    const choices = gpuCountChoices(OPTIONS, STATE);
    expect(choices.map(c => [c.value, c.disabled, c.reason])).toEqual([
      [0, false, null],
      [1, false, null],
      [2, true, '3 A100 80GB free, 4 needed'],
      [4, true, 'your quota has 4 left, 8 needed']
    ]);
    expect(choices[0].label).toBe('0 (CPU only)');
  });

  it('treats user_left null as no personal limit', () => {
    const options = { ...OPTIONS, user_left: null };
    const choices = gpuCountChoices(options, { ...STATE, gpuType: 't4' });
    expect(choices.find(c => c.value === 2)?.disabled).toBe(false);
    expect(choices.find(c => c.value === 4)?.reason).toBe(
      '6 T4 free, 8 needed'
    );
  });

  it('offers CPU only when the hub has no GPUs', () => {
    const options = { ...OPTIONS, gpu_types: [], user_left: null };
    const choices = gpuCountChoices(options, STATE);
    expect(choices.filter(c => !c.disabled).map(c => c.value)).toEqual([0]);
    expect(choices[1].reason).toBe('no GPUs on this hub');
  });
});

describe('initialState', () => {
  it('opens on choices that fit', () => {
    expect(initialState(OPTIONS)).toEqual(STATE);
  });

  it('moves to a GPU type and group that fit', () => {
    const options: IJobOptions = {
      ...OPTIONS,
      gpu_types: [
        { slug: 'a100', display_name: 'A100', free: 1, total: 8 },
        { slug: 't4', display_name: 'T4', free: 6, total: 6 }
      ],
      groups: [
        { group: 'ml', left: 0, quota: 8 },
        { group: 'vision', left: 6, quota: 6 }
      ]
    };
    expect(initialState(options)).toMatchObject({
      gpusPerWorker: 1,
      gpuType: 't4',
      group: 'vision'
    });
  });

  it('falls back to CPU when nothing fits', () => {
    const options = { ...OPTIONS, user_left: 0, max_workers: 1 };
    expect(initialState(options)).toMatchObject({
      workers: 1,
      gpusPerWorker: 0
    });
  });
});

describe('validate', () => {
  it('accepts a job that fits', () => {
    expect(validate(OPTIONS, STATE)).toEqual([]);
  });

  it('names every field that keeps the job from fitting', () => {
    const problems = validate(OPTIONS, {
      ...STATE,
      workers: 5,
      gpusPerWorker: 3,
      group: 'nope',
      argsText: '--name "x'
    });
    expect(problems.map(p => p.field)).toEqual([
      'workers',
      'gpusPerWorker',
      'gpuType',
      'group',
      'argsText'
    ]);
    expect(problems[0].message).toBe(
      'Workers must be a whole number from 1 to 4.'
    );
    expect(problems[4].message).toBe(
      'Unterminated double quote in the arguments.'
    );
  });

  it('explains a quota problem on the field that causes it', () => {
    const problems = validate(OPTIONS, { ...STATE, workers: 3 });
    expect(problems).toEqual([
      {
        field: 'group',
        message: 'Group ml: 2 of 8 GPUs left, the job needs 3.'
      }
    ]);
  });

  it('refuses empty workers', () => {
    expect(
      validate(OPTIONS, { ...STATE, workers: Number.NaN }).map(p => p.field)
    ).toEqual(['workers']);
  });

  it('needs no GPU type or group quota for CPU jobs', () => {
    expect(
      validate(OPTIONS, {
        ...STATE,
        workers: 4,
        gpusPerWorker: 0,
        gpuType: null,
        group: 'ml'
      })
    ).toEqual([]);
  });
});

describe('toRequest', () => {
  it('builds the POST body of the contract', () => {
    expect(
      toRequest('dir/train.ipynb', OPTIONS, {
        ...STATE,
        argsText: '--epochs 3 --name "my run"'
      })
    ).toEqual({
      path: 'dir/train.ipynb',
      framework: 'pytorch',
      workers: 2,
      gpus_per_worker: 1,
      gpu_type: 'a100',
      group: 'ml',
      args: ['--epochs', '3', '--name', 'my run'],
      image: 'torch'
    });
  });

  it('sends no GPU type for CPU jobs and no image when the hub names none', () => {
    expect(
      toRequest(
        't.ipynb',
        { ...OPTIONS, image: null },
        { ...STATE, gpusPerWorker: 0 }
      )
    ).toMatchObject({ gpus_per_worker: 0, gpu_type: null, image: null });
  });
});

describe('timeLimitText', () => {
  it('shows the limit the service decided for the GPU type and count', () => {
    expect(timeLimitText(OPTIONS, STATE)).toBe('120 min');
    expect(timeLimitText(OPTIONS, { ...STATE, gpuType: 't4' })).toBe('0.5 min');
  });

  it('shows nothing without a limit or without a row for the choice', () => {
    expect(timeLimitText(OPTIONS, { ...STATE, gpusPerWorker: 0 })).toBeNull();
    expect(timeLimitText(OPTIONS, { ...STATE, gpusPerWorker: 2 })).toBeNull();
  });
});
