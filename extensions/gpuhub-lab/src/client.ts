/**
 * A small typed HTTP client for `{base_url}/gpuhub/...` (the gpuhub_lab server extension,
 * which forwards to the jobs service, and to the monitor for `gpuhub/gpu...`).
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import type {
  IApiErrorBody,
  IGiveBack,
  IGpuServer,
  IGpuStatus,
  IJob,
  IJobOptions,
  IJobRequest,
  ILogs
} from './types';

/** An error answered by the jobs service or the server extension (or a network failure). */
export class JobsApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly field: string | null = null
  ) {
    super(message);
    this.name = 'JobsApiError';
  }
}

function isErrorBody(data: unknown): data is IApiErrorBody {
  return (
    typeof data === 'object' &&
    data !== null &&
    typeof (data as IApiErrorBody).message === 'string'
  );
}

/**
 * Call `{base_url}/gpuhub/<endPoint>` and parse the JSON answer.
 *
 * @throws JobsApiError with the service's `message` (verbatim) and `field` on any non-2xx.
 */
export async function requestAPI<T>(
  endPoint: string,
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<T> {
  const url = URLExt.join(settings.baseUrl, 'gpuhub', endPoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new JobsApiError(0, `Cannot reach the Jupyter server: ${reason}`);
  }
  const text = await response.text();
  let data: unknown = null;
  if (text.length > 0) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    if (isErrorBody(data)) {
      throw new JobsApiError(response.status, data.message, data.field ?? null);
    }
    const status = `${response.status} ${response.statusText}`.trim();
    throw new JobsApiError(response.status, `The server answered ${status}.`);
  }
  if (data === null) {
    throw new JobsApiError(
      response.status,
      'The server answered without a JSON body.'
    );
  }
  return data as T;
}

/** The jobs API as the lab front end uses it. */
export class JobsClient {
  constructor(
    readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings()
  ) {}

  /** What the dialog offers, with the quota left now. */
  options(): Promise<IJobOptions> {
    return requestAPI<IJobOptions>('options', {}, this.settings);
  }

  /** The user's jobs, newest first. */
  async list(): Promise<IJob[]> {
    const answer = await requestAPI<{ jobs: IJob[] }>(
      'jobs',
      {},
      this.settings
    );
    return answer.jobs;
  }

  get(id: string): Promise<IJob> {
    return requestAPI<IJob>(jobPath(id), {}, this.settings);
  }

  /** Submit the notebook at `request.path` (the server extension adds its content). */
  submit(request: IJobRequest): Promise<IJob> {
    return requestAPI<IJob>(
      'jobs',
      {
        method: 'POST',
        body: JSON.stringify(request),
        headers: { 'Content-Type': 'application/json' }
      },
      this.settings
    );
  }

  /** The last `tail` log lines of one worker. */
  logs(id: string, worker: number, tail = 200): Promise<ILogs> {
    const query = URLExt.objectToQueryString({
      worker: String(worker),
      tail: String(tail)
    });
    return requestAPI<ILogs>(`${jobPath(id)}/logs${query}`, {}, this.settings);
  }

  /** Cancel a job; answers the job, now `Cancelled`. */
  cancel(id: string): Promise<IJob> {
    return requestAPI<IJob>(jobPath(id), { method: 'DELETE' }, this.settings);
  }
}

/** This server's GPUs, through the server extension (which asks the gpuhub monitor). */
export class GpuClient {
  constructor(
    readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings()
  ) {}

  /** This server's GPUs now (`server` is `null` on a CPU server). */
  status(): Promise<IGpuStatus> {
    return requestAPI<IGpuStatus>('gpu', {}, this.settings);
  }

  /** "Keep it": the idle clock restarts; answers the server's new view. */
  keep(): Promise<IGpuServer> {
    return requestAPI<IGpuServer>(
      'gpu/keep',
      { method: 'POST' },
      this.settings
    );
  }

  /** Restart this server on a CPU profile (the stop and start follow). */
  giveBack(): Promise<IGiveBack> {
    return requestAPI<IGiveBack>(
      'gpu/give-back',
      { method: 'POST' },
      this.settings
    );
  }
}

function jobPath(id: string): string {
  return `jobs/${encodeURIComponent(id)}`;
}
