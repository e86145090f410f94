import { ServerConnection } from '@jupyterlab/services';

import { JobsApiError, JobsClient, requestAPI } from '../client';
import type { IJob, IJobRequest } from '../types';

const BASE = 'http://localhost:8888/user/alice/';

/**
 * The URL without ServerConnection's cache buster (a bare `?<timestamp>` query key that
 * `makeRequest` appends because the default `cache` is `no-store`).
 */
function withoutBuster(url: string): string {
  const parsed = new URL(url);
  for (const key of Array.from(parsed.searchParams.keys())) {
    if (/^\d+$/.test(key) && parsed.searchParams.get(key) === '') {
      parsed.searchParams.delete(key);
    }
  }
  return parsed.toString();
}

interface ISeen {
  method: string;
  url: string;
  body: string;
  headers: Headers;
}

/** A fetch stub that records each request and answers from a queue. */
function stub(...answers: Array<[number, unknown]>) {
  const seen: ISeen[] = [];
  const fetch = jest.fn(
    async (input: RequestInfo | URL, init?: RequestInit) => {
      const request = new Request(input, init);
      seen.push({
        method: request.method,
        url: withoutBuster(request.url),
        body: await request.text(),
        headers: request.headers
      });
      const [status, body] = answers.shift() ?? [
        500,
        { message: 'unexpected request' }
      ];
      const text = typeof body === 'string' ? body : JSON.stringify(body);
      return new Response(text, {
        status,
        headers: { 'Content-Type': 'application/json' }
      });
    }
  );
  const settings = ServerConnection.makeSettings({
    baseUrl: BASE,
    token: 'server-token',
    fetch: fetch as unknown as typeof globalThis.fetch
  });
  return { client: new JobsClient(settings), settings, seen, fetch };
}

const JOB: IJob = {
  id: 'j-1a2b',
  user: 'alice',
  name: 'train',
  path: 'dir/train.ipynb',
  framework: 'pytorch',
  workers: 2,
  gpus_per_worker: 1,
  gpu_type: 'a100',
  group: 'ml',
  image: null,
  state: 'Queued',
  message: '',
  created: '2026-11-23T04:00:00Z',
  started: null,
  finished: null,
  worker_states: [],
  queue_position: null
};

describe('JobsClient', () => {
  it('reads the options from gpuhub/options', async () => {
    const options = { frameworks: ['pytorch'], gpu_types: [], groups: [] };
    const { client, seen } = stub([200, options]);

    await expect(client.options()).resolves.toEqual(options);

    expect(seen).toHaveLength(1);
    expect(seen[0].method).toBe('GET');
    expect(seen[0].url).toBe(`${BASE}gpuhub/options`);
    expect(seen[0].headers.get('Authorization')).toBe('token server-token');
  });

  it('lists jobs from gpuhub/jobs', async () => {
    const { client, seen } = stub([200, { jobs: [JOB] }]);

    await expect(client.list()).resolves.toEqual([JOB]);

    expect([seen[0].method, seen[0].url]).toEqual([
      'GET',
      `${BASE}gpuhub/jobs`
    ]);
  });

  it('submits the options as JSON with POST gpuhub/jobs', async () => {
    const { client, seen } = stub([201, JOB]);
    const request: IJobRequest = {
      path: 'dir/train.ipynb',
      framework: 'pytorch',
      workers: 2,
      gpus_per_worker: 1,
      gpu_type: 'a100',
      group: 'ml',
      args: ['--epochs', '3'],
      image: null
    };

    await expect(client.submit(request)).resolves.toEqual(JOB);

    expect(seen[0].method).toBe('POST');
    expect(seen[0].url).toBe(`${BASE}gpuhub/jobs`);
    expect(JSON.parse(seen[0].body)).toEqual(request);
    expect(seen[0].headers.get('Content-Type')).toBe('application/json');
  });

  it('gets one job, escaping its id', async () => {
    const { client, seen } = stub([200, JOB]);

    await client.get('j 1/2');

    expect(seen[0].url).toBe(`${BASE}gpuhub/jobs/j%201%2F2`);
  });

  it('asks for a worker log tail', async () => {
    const logs = { worker: 1, lines: ['rank 1 ready'], workers: 2 };
    const { client, seen } = stub([200, logs]);

    await expect(client.logs('j-1a2b', 1, 50)).resolves.toEqual(logs);

    const url = new URL(seen[0].url);
    expect(seen[0].method).toBe('GET');
    expect(url.pathname).toBe('/user/alice/gpuhub/jobs/j-1a2b/logs');
    expect(Object.fromEntries(url.searchParams)).toEqual({
      worker: '1',
      tail: '50'
    });
  });

  it('cancels with DELETE gpuhub/jobs/<id>', async () => {
    const cancelled = { ...JOB, state: 'Cancelled' };
    const { client, seen } = stub([202, cancelled]);

    await expect(client.cancel('j-1a2b')).resolves.toEqual(cancelled);

    expect([seen[0].method, seen[0].url]).toEqual([
      'DELETE',
      `${BASE}gpuhub/jobs/j-1a2b`
    ]);
  });

  it('raises the quota denial with its message verbatim', async () => {
    const message =
      'group ml has 0 of 8 GPUs left: alice holds 4 (notebook), bob holds 4 (job j-77)';
    const { client } = stub([403, { status: 403, field: null, message }]);

    const error = await client.submit({} as IJobRequest).catch(e => e);

    expect(error).toBeInstanceOf(JobsApiError);
    expect(error.status).toBe(403);
    expect(error.message).toBe(message);
    expect(error.field).toBeNull();
  });

  it('keeps the field of a 400', async () => {
    const { client } = stub([
      400,
      {
        status: 400,
        field: 'workers',
        message: 'workers must be between 1 and 4'
      }
    ]);

    const error = await client.submit({} as IJobRequest).catch(e => e);

    expect([error.status, error.field, error.message]).toEqual([
      400,
      'workers',
      'workers must be between 1 and 4'
    ]);
  });

  it('explains answers that are not JSON', async () => {
    const { client } = stub([502, '<html>Bad Gateway</html>']);

    const error = await client.list().catch(e => e);

    expect(error).toBeInstanceOf(JobsApiError);
    expect(error.status).toBe(502);
    expect(error.message).toMatch(/^The server answered 502/);
  });

  it('turns a network failure into a JobsApiError', async () => {
    const settings = ServerConnection.makeSettings({
      baseUrl: BASE,
      fetch: (() => Promise.reject(new TypeError('Failed to fetch'))) as any
    });

    const error: JobsApiError = await requestAPI<unknown>(
      'jobs',
      {},
      settings
    ).then(
      () => {
        throw new Error('expected a failure');
      },
      (e: JobsApiError) => e
    );

    expect(error).toBeInstanceOf(JobsApiError);
    expect(error.status).toBe(0);
    expect(error.message).toContain('Failed to fetch');
  });
});
