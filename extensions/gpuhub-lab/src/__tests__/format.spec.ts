import {
  formatDuration,
  formatGpus,
  isActive,
  jobElapsed,
  stateText
} from '../format';

describe('formatDuration', () => {
  it.each([
    [0, '0:00'],
    [999, '0:00'],
    [7_000, '0:07'],
    [65_000, '1:05'],
    [12 * 60_000 + 5_000, '12:05'],
    [3_600_000 + 2 * 60_000 + 3_000, '1:02:03'],
    [2 * 86_400_000 + 3 * 3_600_000 + 4 * 60_000 + 5_000, '2d 03:04:05'],
    [-5_000, '0:00'],
    [Number.NaN, '0:00']
  ])('%d ms reads %s', (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
  });
});

describe('jobElapsed', () => {
  const created = '2026-11-23T04:00:00Z';
  const now = Date.parse('2026-11-23T04:10:30Z');

  it('counts the wait of a queued job from its creation', () => {
    expect(
      jobElapsed(
        { created, started: null, finished: null, state: 'Queued' },
        now
      )
    ).toEqual({ label: 'waiting for', value: '10:30' });
  });

  it('counts a running job from its start to now', () => {
    expect(
      jobElapsed(
        {
          created,
          started: '2026-11-23T04:01:00Z',
          finished: null,
          state: 'Running'
        },
        now
      )
    ).toEqual({ label: 'running for', value: '9:30' });
  });

  it('stops the clock when the job finished', () => {
    expect(
      jobElapsed(
        {
          created,
          started: '2026-11-23T04:01:00Z',
          finished: '2026-11-23T04:02:15Z',
          state: 'Succeeded'
        },
        now
      )
    ).toEqual({ label: 'ran for', value: '1:15' });
  });

  it('reports the wait of a job cancelled before it started', () => {
    expect(
      jobElapsed(
        {
          created,
          started: null,
          finished: '2026-11-23T04:00:42Z',
          state: 'Cancelled'
        },
        now
      )
    ).toEqual({ label: 'waited', value: '0:42' });
  });
});

describe('formatGpus', () => {
  it('names workers, GPUs per worker, type and total', () => {
    expect(
      formatGpus({ workers: 2, gpus_per_worker: 1, gpu_type: 'a100' })
    ).toBe('2 × 1 a100 (2 GPUs)');
    expect(formatGpus({ workers: 1, gpus_per_worker: 1, gpu_type: null })).toBe(
      '1 × 1 (1 GPU)'
    );
  });

  it('says CPU for jobs without GPUs', () => {
    expect(formatGpus({ workers: 2, gpus_per_worker: 0, gpu_type: null })).toBe(
      '2 × CPU'
    );
  });
});

describe('states', () => {
  it('treats only Queued and Running as active', () => {
    expect(isActive('Queued')).toBe(true);
    expect(isActive('Running')).toBe(true);
    expect(isActive('Succeeded')).toBe(false);
    expect(isActive('Failed')).toBe(false);
    expect(isActive('Cancelled')).toBe(false);
  });

  it('shows the queue position of a queued job', () => {
    expect(stateText({ state: 'Queued', queue_position: 3 })).toBe('Queued #3');
    expect(stateText({ state: 'Queued', queue_position: null })).toBe('Queued');
    expect(stateText({ state: 'Running', queue_position: null })).toBe(
      'Running'
    );
  });
});
