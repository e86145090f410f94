import { MessageLoop } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { IFormState } from '../choices';
import { JobsClient } from '../client';
import { FIELD_IDS, RunJobBody } from '../dialog';
import { JobsPanel } from '../panel';
import type { IJob, IJobOptions, ILogs } from '../types';

const OPTIONS: IJobOptions = {
  frameworks: ['pytorch', 'tensorflow'],
  gpu_types: [{ slug: 'a100', display_name: 'A100', free: 3, total: 8 }],
  groups: [
    { group: 'ml', left: 2, quota: 8 },
    { group: 'vision', left: 6, quota: 6 }
  ],
  user_left: null,
  max_workers: 4,
  gpu_counts: [0, 1, 2],
  image: null,
  time_limits: [
    { gpu_type: null, gpus_per_worker: 0, minutes: null },
    { gpu_type: 'a100', gpus_per_worker: 1, minutes: 90 },
    { gpu_type: 'a100', gpus_per_worker: 2, minutes: 90 }
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

function job(
  id: string,
  state: IJob['state'],
  extra: Partial<IJob> = {}
): IJob {
  return {
    id,
    user: 'alice',
    name: `train-${id}`,
    path: 'train.ipynb',
    framework: 'pytorch',
    workers: 2,
    gpus_per_worker: 1,
    gpu_type: 'a100',
    group: 'ml',
    image: null,
    state,
    message: '',
    created: '2026-11-23T04:00:00Z',
    started: '2026-11-23T04:00:05Z',
    finished: state === 'Running' ? null : '2026-11-23T04:01:10Z',
    worker_states: [],
    queue_position: null,
    ...extra
  };
}

/** A JobsClient whose methods are jest mocks (no HTTP at all). */
function fakeClient(overrides: Partial<Record<keyof JobsClient, jest.Mock>>) {
  return overrides as unknown as JobsClient;
}

async function render(widget: Widget & { renderPromise?: Promise<void> }) {
  MessageLoop.sendMessage(widget, Widget.Msg.UpdateRequest);
  await widget.renderPromise;
}

const flush = () => new Promise(resolve => setTimeout(resolve, 0));

describe('RunJobBody', () => {
  let body: RunJobBody;

  afterEach(() => {
    body.dispose();
  });

  async function open(state: IFormState = STATE) {
    body = new RunJobBody({
      client: fakeClient({ options: jest.fn().mockResolvedValue(OPTIONS) }),
      options: OPTIONS,
      state,
      path: 'dir/train.ipynb'
    });
    Widget.attach(body, document.body);
    await render(body);
    return body.node;
  }

  it('labels every field', async () => {
    const node = await open();
    for (const id of Object.values(FIELD_IDS)) {
      const field = node.querySelector(`#${id}`);
      expect(field).not.toBeNull();
      expect(field?.getAttribute('data-testid')).toBe(id);
      expect(node.querySelector(`label[for="${id}"]`)).not.toBeNull();
    }
  });

  it('says when the job will be ended by its time limit', async () => {
    const summary = (await open()).querySelector('.gpuhub-RunJobForm-summary');
    expect(summary?.textContent).toContain('ends after 90 min (time limit)');
    body.dispose();
    const cpu = (await open({ ...STATE, gpusPerWorker: 0 })).querySelector(
      '.gpuhub-RunJobForm-summary'
    );
    expect(cpu?.textContent).not.toContain('time limit');
  });

  it('disables choices that do not fit and says why', async () => {
    const node = await open();
    const groups = Array.from(
      node.querySelectorAll<HTMLOptionElement>(`#${FIELD_IDS.group} option`)
    );
    expect(groups.map(o => [o.value, o.disabled, o.textContent])).toEqual([
      ['ml', false, 'ml'],
      ['vision', false, 'vision']
    ]);
    const counts = Array.from(
      node.querySelectorAll<HTMLOptionElement>(
        `#${FIELD_IDS.gpusPerWorker} option`
      )
    );
    expect(counts.map(o => [o.value, o.disabled])).toEqual([
      ['0', false],
      ['1', false],
      ['2', true]
    ]);
    expect(counts[2].textContent).toBe('2 — 3 A100 free, 4 needed');
  });

  it('shows the problem on the field and reports validity', async () => {
    const validity: boolean[] = [];
    const node = await open({ ...STATE, workers: 3 });
    body.onValidity = ok => validity.push(ok);
    expect(body.isValid).toBe(false);
    const note = node.querySelector(`#${FIELD_IDS.group}-note`);
    expect(note?.textContent).toBe(
      'Group ml: 2 of 8 GPUs left, the job needs 3.'
    );
    expect(note?.classList.contains('gpuhub-mod-problem')).toBe(true);

    body.state = { ...body.state, group: 'vision' };
    await body.refresh();
    expect(validity[validity.length - 1]).toBe(true);
  });

  it('stops Enter from submitting an invalid form', async () => {
    const node = await open({ ...STATE, workers: 9 });
    const input = node.querySelector<HTMLInputElement>(
      `#${FIELD_IDS.workers}`
    )!;
    const event = new KeyboardEvent('keydown', {
      key: 'Enter',
      bubbles: true,
      cancelable: true
    });
    input.dispatchEvent(event);
    expect(event.defaultPrevented).toBe(true);
  });

  it('lets Enter through when the form is valid', async () => {
    const node = await open();
    const input = node.querySelector<HTMLInputElement>(
      `#${FIELD_IDS.workers}`
    )!;
    const event = new KeyboardEvent('keydown', {
      key: 'Enter',
      bubbles: true,
      cancelable: true
    });
    input.dispatchEvent(event);
    expect(event.defaultPrevented).toBe(false);
  });

  it('refreshes the quota shown from the service', async () => {
    const node = await open();
    const fresher = {
      ...OPTIONS,
      groups: [{ group: 'ml', left: 7, quota: 8 }, OPTIONS.groups[1]]
    };
    (body as any)._client = fakeClient({
      options: jest.fn().mockResolvedValue(fresher)
    });
    await body.refresh();
    await render(body);
    const row = node.querySelector('[data-testid="gpuhub-quota-group-ml"]');
    expect(row?.textContent?.replace(/\s+/g, ' ')).toBe('Group ml7 of 8 left');
  });
});

describe('JobsPanel', () => {
  let panel: JobsPanel;

  afterEach(() => {
    panel.dispose();
  });

  it('lists jobs with a state badge, GPUs and group', async () => {
    const client = fakeClient({
      list: jest
        .fn()
        .mockResolvedValue([
          job('j1', 'Running'),
          job('j2', 'Failed', { message: 'rank 1 exited with 1' })
        ])
    });
    panel = new JobsPanel(client);
    Widget.attach(panel, document.body);
    await panel.refresh();
    await render(panel);

    expect(panel.node.getAttribute('data-testid')).toBe('gpuhub-jobs-panel');
    const row = panel.node.querySelector('[data-testid="gpuhub-job-j1"]')!;
    expect(row.getAttribute('data-state')).toBe('Running');
    expect(
      row.querySelector('[data-testid="gpuhub-job-state"]')?.textContent
    ).toBe('Running');
    expect(row.textContent).toContain('2 × 1 a100 (2 GPUs)');
    expect(row.textContent).toContain('group ml');
    const failed = panel.node.querySelector('[data-testid="gpuhub-job-j2"]')!;
    expect(failed.querySelector('.gpuhub-Badge--failed')).not.toBeNull();
    expect(failed.textContent).toContain('1:05');
  });

  it('shows the service error verbatim', async () => {
    const { JobsApiError } = await import('../client');
    const client = fakeClient({
      list: jest
        .fn()
        .mockRejectedValue(
          new JobsApiError(
            503,
            'the gpuhub jobs service is not configured for this server'
          )
        )
    });
    panel = new JobsPanel(client);
    Widget.attach(panel, document.body);
    await panel.refresh();
    await render(panel);

    expect(
      panel.node.querySelector('[data-testid="gpuhub-jobs-error"]')?.textContent
    ).toBe('the gpuhub jobs service is not configured for this server');
  });

  it('opens a job with its log tail and switches workers', async () => {
    const logs = jest.fn(
      async (_id: string, worker: number): Promise<ILogs> => ({
        worker,
        lines: [`rank ${worker} ready`, `rank ${worker} epoch 1`],
        workers: 2
      })
    );
    const running = job('j1', 'Running');
    const client = fakeClient({
      list: jest.fn().mockResolvedValue([running]),
      logs
    });
    panel = new JobsPanel(client);
    Widget.attach(panel, document.body);
    panel.showJob(running);
    await flush();
    await render(panel);

    expect(logs).toHaveBeenCalledWith('j1', 0, 200);
    const log = panel.node.querySelector('[data-testid="gpuhub-job-log"]');
    expect(log?.textContent).toBe('rank 0 ready\nrank 0 epoch 1');
    const select = panel.node.querySelector<HTMLSelectElement>(
      '[data-testid="gpuhub-log-worker"]'
    )!;
    expect(Array.from(select.options).map(o => o.value)).toEqual(['0', '1']);
    expect(
      panel.node.querySelector('label[for="gpuhub-log-worker-j1"]')
    ).not.toBeNull();
    expect(
      panel.node.querySelector('[data-testid="gpuhub-job-cancel"]')
    ).not.toBeNull();
  });
});
