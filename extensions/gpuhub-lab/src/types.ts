/**
 * Types of the gpuhub jobs service HTTP API (docs/jobs-api.md), as forwarded by the
 * gpuhub_lab server extension under `{base_url}/gpuhub/`.
 */

export type Framework = 'pytorch' | 'tensorflow';

export type JobState =
  'Queued' | 'Running' | 'Succeeded' | 'Failed' | 'Cancelled';

export interface IGpuType {
  slug: string;
  display_name: string;
  free: number;
  total: number;
}

export interface IGroupQuota {
  group: string;
  left: number;
  quota: number;
}

export interface IImage {
  slug: string;
  display_name: string;
}

/** `GET api/options`: what the dialog offers, with the quota left live. */
export interface IJobOptions {
  frameworks: Framework[];
  gpu_types: IGpuType[];
  groups: IGroupQuota[];
  user_left: number | null;
  max_workers: number;
  gpu_counts: number[];
  image: IImage | null;
}

export interface IWorkerState {
  index: number;
  state: string;
  exit_code: number | null;
}

export interface IJob {
  id: string;
  user: string;
  name: string;
  path: string;
  framework: string;
  workers: number;
  gpus_per_worker: number;
  gpu_type: string | null;
  group: string | null;
  image: string | null;
  state: JobState;
  message: string;
  created: string;
  started: string | null;
  finished: string | null;
  worker_states: IWorkerState[];
  queue_position: number | null;
}

/**
 * What the browser sends with `POST gpuhub/jobs`; the server extension reads the notebook at
 * `path` itself and adds it as `notebook`.
 */
export interface IJobRequest {
  path: string;
  framework: Framework;
  workers: number;
  gpus_per_worker: number;
  gpu_type: string | null;
  group: string | null;
  args: string[];
  image: string | null;
}

export interface ILogs {
  worker: number;
  lines: string[];
  workers: number;
}

/** Error body of the service (and of the server extension). */
export interface IApiErrorBody {
  status: number;
  field: string | null;
  message: string;
}
