import {
  cullMessage,
  CULL_NOTICE_MS,
  formatUtilization,
  newCulls,
  localClock,
  statusText,
  warningMessage,
  WarningTracker
} from '../gpuformat';
import type { ICulled, IGpuServer } from '../types';

/** 09:12 local time (the browser shows local times). */
const AT_0912 = new Date(2026, 11, 1, 9, 12, 30);

function server(extra: Partial<IGpuServer> = {}): IGpuServer {
  return {
    server: '',
    gpus: 1,
    gpu_type: 'a100',
    gpu_type_name: 'A100',
    group: 'vision',
    devices: [0],
    since: AT_0912.toISOString(),
    utilization: 73.4,
    idle_seconds: 0,
    idle_culling: null,
    cull_at: null,
    warning: null,
    ...extra
  };
}

describe('statusText', () => {
  it('reads count × type · utilisation · group · local start', () => {
    expect(statusText(server())).toBe(
      'GPU: 1 × A100 · 73% · group vision · since 09:12'
    );
  });

  it('shows – while the utilisation is not measured', () => {
    expect(statusText(server({ gpus: 2, utilization: null }))).toBe(
      'GPU: 2 × A100 · – · group vision · since 09:12'
    );
  });

  it('falls back to the slug and leaves out an unknown start', () => {
    expect(statusText(server({ gpu_type_name: undefined, since: null }))).toBe(
      'GPU: 1 × a100 · 73% · group vision'
    );
  });
});

describe('formatUtilization', () => {
  it.each([
    [0, '0%'],
    [99.6, '100%'],
    [null, '–'],
    [Number.NaN, '–']
  ])('%p reads %s', (value, text) => {
    expect(formatUtilization(value)).toBe(text);
  });
});

describe('warningMessage', () => {
  const cullAt = new Date(2026, 11, 1, 9, 42).getTime() / 1000;

  it('says when the server will be stopped', () => {
    expect(warningMessage({ cull_at: cullAt, action: 'stop' })).toBe(
      'GPU idle: this server will be stopped at 09:42'
    );
  });

  it('says when it will be restarted on CPU', () => {
    expect(warningMessage({ cull_at: cullAt, action: 'restart-on-cpu' })).toBe(
      'GPU idle: this server will be restarted on CPU at 09:42'
    );
  });

  it('pads the local clock', () => {
    expect(localClock(new Date(2026, 0, 2, 7, 5).getTime())).toBe('07:05');
  });
});

describe('WarningTracker', () => {
  const warned = (cullAt: number) =>
    server({ warning: { cull_at: cullAt, action: 'stop' } });

  it('shows a warning once however often it is read', () => {
    const tracker = new WarningTracker();
    expect(tracker.update(server())).toEqual([]);
    const [shown, ...rest] = tracker.update(warned(1000));
    expect(rest).toEqual([]);
    expect(shown).toMatchObject({ kind: 'show', key: '@1000' });
    expect(tracker.update(warned(1000))).toEqual([]);
    expect(tracker.update(warned(1000))).toEqual([]);
    expect(tracker.current).toBe('@1000');
  });

  it('withdraws the warning when it ends (kept, busy again, CPU server)', () => {
    const tracker = new WarningTracker();
    tracker.update(warned(1000));
    expect(tracker.update(server())).toEqual([
      { kind: 'dismiss', key: '@1000' }
    ]);
    tracker.update(warned(2000));
    expect(tracker.update(null)).toEqual([{ kind: 'dismiss', key: '@2000' }]);
    expect(tracker.current).toBeNull();
  });

  it('shows a new warning after "keep it" (a new cull time)', () => {
    const tracker = new WarningTracker();
    tracker.update(warned(1000));
    expect(tracker.update(warned(5000)).map(c => c.kind)).toEqual([
      'dismiss',
      'show'
    ]);
  });
});

describe('culls', () => {
  const at = new Date(2026, 11, 1, 11, 22).getTime();
  const cull = (action: ICulled['action'], atMs = at): ICulled => ({
    server: '',
    at: atMs / 1000,
    action,
    gpus: 1,
    gpu_type: 'a100'
  });

  it('say what happened and when', () => {
    expect(cullMessage(cull('restart-on-cpu'))).toBe(
      'Your GPUs sat idle: this server was restarted on CPU at 11:22 (1 × a100 given back).'
    );
    expect(cullMessage(cull('stop'))).toContain(
      'this server was stopped at 11:22'
    );
  });

  it('are told once, and only when recent', () => {
    const told = new Set<string>();
    const old = cull('stop', at - CULL_NOTICE_MS - 1);
    const recent = cull('restart-on-cpu');
    expect(newCulls([old, recent], told, at + 60_000)).toEqual([recent]);
    expect(newCulls([old, recent], told, at + 120_000)).toEqual([]);
  });
});
