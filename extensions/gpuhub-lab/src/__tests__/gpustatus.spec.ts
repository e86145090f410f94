import { Notification } from '@jupyterlab/apputils';
import { ServerConnection } from '@jupyterlab/services';

import { GpuClient } from '../client';
import { GpuStatusModel, IdleWarnings } from '../gpustatus';
import type { IGpuStatus } from '../types';

const BASE = 'http://localhost:8888/user/alice/';

/** A fetch stub answering `GET gpuhub/gpu` with `status()` and `POST .../keep` with 200. */
function stubClient(status: () => IGpuStatus) {
  const seen: string[] = [];
  const fetch = jest.fn(
    async (input: RequestInfo | URL, init?: RequestInit) => {
      const request = new Request(input, init);
      const path = new URL(request.url).pathname;
      seen.push(`${request.method} ${path}`);
      const body = path.endsWith('/gpu/keep')
        ? { ...status().server, warning: null, cull_at: 2_000_000_000 }
        : status();
      return new Response(JSON.stringify(body), {
        status: 200,
        headers: { 'Content-Type': 'application/json' }
      });
    }
  );
  const settings = ServerConnection.makeSettings({
    baseUrl: BASE,
    fetch: fetch as unknown as typeof globalThis.fetch
  });
  return { client: new GpuClient(settings), seen };
}

function status(cullAt: number | null): IGpuStatus {
  return {
    server: {
      server: '',
      gpus: 1,
      gpu_type: 'a100',
      gpu_type_name: 'A100',
      group: 'vision',
      devices: [0],
      since: '2026-12-01T09:12:00Z',
      utilization: 0,
      idle_seconds: 600,
      idle_culling: null,
      cull_at: cullAt,
      warning: cullAt === null ? null : { cull_at: cullAt, action: 'stop' }
    },
    culled: []
  };
}

function warnings(): Notification.INotification[] {
  return Notification.manager.notifications.filter(n =>
    n.message.startsWith('GPU idle:')
  );
}

describe('IdleWarnings', () => {
  afterEach(() => Notification.dismiss());

  it('notifies once per warning, with "Keep it" calling the monitor', async () => {
    let current = status(null);
    const { client, seen } = stubClient(() => current);
    const model = new GpuStatusModel(client);
    new IdleWarnings(model);

    await model.refresh();
    expect(warnings()).toHaveLength(0);

    current = status(1_900_000_000);
    await model.refresh();
    await model.refresh();
    await model.refresh();
    expect(warnings()).toHaveLength(1);
    const [toast] = warnings();
    expect(toast.type).toBe('warning');
    expect(toast.options.autoClose).toBe(false);
    const keep = toast.options.actions?.find(a => a.label === 'Keep it');
    expect(keep).toBeDefined();

    keep!.callback(new MouseEvent('click'));
    await new Promise(resolve => setTimeout(resolve, 0));
    expect(seen).toContain('POST /user/alice/gpuhub/gpu/keep');

    // the warning ends: its notification goes; a later one is a new notification
    current = status(null);
    await model.refresh();
    expect(warnings()).toHaveLength(0);
    current = status(1_900_000_900);
    await model.refresh();
    expect(warnings()).toHaveLength(1);
  });
});
