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

/** A job's time limit for one GPU type and count (`gpu_type` null, 0 GPUs: CPU workers). */
export interface ITimeLimit {
  gpu_type: string | null;
  gpus_per_worker: number;
  /** Minutes of run time, or `null`: no limit. */
  minutes: number | null;
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
  /** The time limit of each GPU type and count offered, decided by the service. */
  time_limits: ITimeLimit[];
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

/** What happens to an idle GPU server when its warning runs out. */
export type CullAction = 'stop' | 'restart-on-cpu';

/** A warned server: it goes at `cull_at` (epoch seconds) unless the user keeps it. */
export interface IGpuWarning {
  cull_at: number;
  action: CullAction;
}

/** This server's GPUs as the monitor sees them (docs/monitoring.md, `GET api/servers`). */
export interface IGpuServer {
  server: string;
  gpus: number;
  gpu_type: string;
  /** The GPU type's display name (`A100`); older monitors send only the slug. */
  gpu_type_name?: string;
  group: string;
  devices: number[];
  /** ISO time the GPUs were allocated. */
  since: string | null;
  /** Mean utilisation now in percent; `null` while not measured. */
  utilization: number | null;
  idle_seconds: number;
  idle_culling: {
    threshold_percent: number;
    idle_minutes: number;
    warn_minutes: number;
    action: CullAction;
  } | null;
  cull_at: number | null;
  warning: IGpuWarning | null;
}

/** A server given back by the monitor. */
export interface ICulled {
  server: string;
  at: number;
  action: CullAction;
  gpus: number;
  gpu_type: string;
}

/** `GET gpuhub/gpu`: this server's GPUs (`null` on a CPU server) and its culls. */
export interface IGpuStatus {
  server: IGpuServer | null;
  culled: ICulled[];
}

/** `POST gpuhub/gpu/give-back` (202): the CPU profile the server restarts on. */
export interface IGiveBack {
  server: string;
  profile: string;
  profile_name: string;
  /** The image kept, or `null` when the CPU profile does not offer it (its default). */
  image: string | null;
}
