import { describe, expect, it, vi } from 'vitest';
import { Pool, SHUTDOWN_GRACE_MS } from '../../src/proxy/pool.js';
import { order, pick } from '../../src/proxy/balancer.js';
import { checkResult, connectFailed, initialHealth, isUp, type HealthSettings } from '../../src/proxy/health.js';
import { proxyConfigSchema } from '../../src/proxy/config.js';

const c = (id: string, active = 0) => ({ id, active });
const ids = (list: { id: string }[]) => list.map((x) => x.id);
const firstByHash = (cands: { id: string; active: number }[], key: string) => pick(cands, 'hash', 0, () => key)!.id;

describe('balancing', () => {
  it('least_conn picks the backend with the fewest connections, ties in turn', () => {
    expect(ids(order([c('a', 3), c('b', 1), c('c', 2)], 'least_conn', 0, ''))).toEqual(['b', 'c', 'a']);
    const firsts = [0, 1, 2].map((rr) => pick([c('a'), c('b'), c('c')], 'least_conn', rr, () => '')!.id);
    expect(firsts).toEqual(['a', 'b', 'c']);
  });

  it('round_robin rotates whatever the load', () => {
    expect([0, 1, 2, 3].map((rr) => pick([c('a', 9), c('b'), c('c')], 'round_robin', rr, () => '')!.id)).toEqual(['a', 'b', 'c', 'a']);
  });

  it('hash on the client address and port spreads one node\'s clients over every backend', () => {
    const counts: Record<string, number> = { a: 0, b: 0, c: 0 };
    for (let port = 30000; port < 33000; port++) counts[firstByHash([c('a'), c('b'), c('c')], `127.0.0.1:${port}`)]!++;
    for (const n of Object.values(counts)) expect(n).toBeGreaterThan(800); // about 1000 each of 3000
  });

  it('hash is stable, and removing a backend moves only its own clients', () => {
    const keys = Array.from({ length: 500 }, (_, i) => `127.0.0.1:${40000 + i}`);
    const before = keys.map((k) => firstByHash([c('a'), c('b'), c('c')], k));
    const after = keys.map((k) => firstByHash([c('a'), c('c')], k));
    keys.forEach((_, i) => {
      if (before[i] !== 'b') expect(after[i]).toBe(before[i]);
    });
    expect(keys.map((k) => firstByHash([c('c'), c('b'), c('a')], k))).toEqual(before);
  });

  it('after a failed dial, the next choice skips what was tried, for every policy, until none is left', () => {
    for (const balance of ['least_conn', 'round_robin', 'hash'] as const) {
      const cands = [c('a', 2), c('b', 0), c('c', 1)];
      const tried = new Set<(typeof cands)[number]>();
      for (let i = 0; i < 3; i++) tried.add(pick(cands, balance, 1, () => '127.0.0.1:5000', tried)!);
      expect(tried.size).toBe(3);
      expect(pick(cands, balance, 1, () => '127.0.0.1:5000', tried)).toBeUndefined();
    }
    expect(ids(order([c('a', 1), c('b', 0)], 'least_conn', 0, ''))).toEqual(['b', 'a']);
    expect(ids(order([c('a'), c('b'), c('c')], 'hash', 0, 'k')).sort()).toEqual(['a', 'b', 'c']);
    expect(order([], 'least_conn', 0, '')).toEqual([]);
  });

  it('never builds the hash key for the other policies', () => {
    const key = () => {
      throw new Error('key asked');
    };
    expect(pick([c('a'), c('b')], 'least_conn', 0, key)!.id).toBe('a');
    expect(pick([c('a'), c('b')], 'round_robin', 1, key)!.id).toBe('b');
  });
});

describe('health', () => {
  const s: HealthSettings = { maxFails: 3, failTimeout: 30_000, rise: 2, fall: 2, activeEnabled: true };

  it('the first check decides at once; after that a down backend needs `rise` good checks', () => {
    expect(isUp(initialHealth(s), 0)).toBe(true);
    expect(isUp(checkResult(initialHealth(s), s, true), 0)).toBe(true);
    let h = checkResult(initialHealth(s), s, false);
    expect(isUp(h, 0)).toBe(false);
    h = checkResult(h, s, true);
    expect(isUp(h, 0)).toBe(false);
    h = checkResult(h, s, true);
    expect(isUp(h, 0)).toBe(true);
  });

  it('`fall` failed checks in a row take it down; a good one in between resets the count', () => {
    let h = checkResult(checkResult(initialHealth(s), s, true), s, true);
    h = checkResult(h, s, false);
    h = checkResult(h, s, true);
    h = checkResult(h, s, false);
    expect(isUp(h, 0)).toBe(true);
    h = checkResult(h, s, false);
    expect(isUp(h, 0)).toBe(false);
  });

  it('passive: maxFails failed connects within failTimeout ban it for failTimeout, as nginx', () => {
    let h = initialHealth({ ...s, activeEnabled: false });
    expect(isUp(h, 0)).toBe(true);
    h = connectFailed(h, s, 1000);
    h = connectFailed(h, s, 2000);
    expect(isUp(h, 2000)).toBe(true);
    h = connectFailed(h, s, 3000);
    expect(isUp(h, 3000)).toBe(false);
    expect(isUp(h, 32_999)).toBe(false);
    expect(isUp(h, 33_000)).toBe(true);
  });

  it('passive: failures spread wider than failTimeout do not add up; maxFails 0 disables it', () => {
    let h = initialHealth({ ...s, activeEnabled: false });
    for (const t of [0, 20_000, 40_000, 60_000]) h = connectFailed(h, s, t);
    expect(isUp(h, 60_000)).toBe(true);
    let off = initialHealth({ ...s, activeEnabled: false, maxFails: 0 });
    for (let t = 0; t < 10; t++) off = connectFailed(off, { ...s, maxFails: 0 }, t);
    expect(isUp(off, 10)).toBe(true);
  });
});

describe('the pool on reload and stop', () => {
  it("a backend a reload removed keeps its open connections counted until they are closed: SIGTERM's drain waits for them, closeAll closes them", () => {
    const cfg = proxyConfigSchema.parse({ backends: [{ name: 'm1', address: '10.0.0.1', port: 6443 }, { name: 'm2', address: '10.0.0.2', port: 6443 }], shutdownTimeout: '10s' });
    const pool = new Pool(cfg, () => undefined);
    const m1 = pool.backends.get('10.0.0.1:6443')!;
    let closed = 0;
    const pair = { bytesIn: 0, bytesOut: 0, close: () => { closed++; m1.conns.delete(pair); } };
    m1.conns.add(pair);
    pool.reload({ ...cfg, backends: [cfg.backends[1]!] });
    expect(pool.open()).toBe(1);
    expect(closed).toBe(0);
    pool.closeAll();
    expect(closed).toBe(1);
    expect(pool.open()).toBe(0);
  });
});

describe('the pool when an apiserver says it is shutting down', () => {
  const two = () => proxyConfigSchema.parse({ backends: [{ name: 'm1', address: '10.0.0.1', port: 6443 }, { name: 'm2', address: '10.0.0.2', port: 6443 }], active: { fall: 1 } });
  const withConns = (pool: Pool, k: string, n: number) => {
    const b = pool.backends.get(k)!;
    const closed: number[] = [];
    for (let i = 0; i < n; i++) {
      const pair = { bytesIn: 0, bytesOut: 0, close: () => { closed.push(i); b.conns.delete(pair); } };
      b.conns.add(pair);
    }
    return closed;
  };
  const shutdown = { ok: false, detail: 'HTTP 500, shutting down', resumed: false, shuttingDown: true };

  it('no new connections at once, its open ones left to it (it ends them itself); closed at once if it then stops answering', () => {
    vi.useFakeTimers();
    try {
      const logs: string[] = [];
      const pool = new Pool(two(), (m) => logs.push(m));
      const closed = withConns(pool, '10.0.0.1:6443', 3);
      pool.checked('10.0.0.1:6443', shutdown, 5);
      expect(pool.candidates().map((b) => b.backend.name)).toEqual(['m2']);
      expect(closed).toEqual([]);
      expect(logs.at(-1)).toMatch(/backend m1 \(10\.0\.0\.1:6443\) is DOWN: its health check fails: HTTP 500, shutting down; no new connections, its 3 open ones left to it to end \(closed after 60 s if it has not\)/);
      // Refused while it drains: still left to it.
      pool.checked('10.0.0.1:6443', { ok: false, detail: 'connect ECONNREFUSED 10.0.0.1:6443', resumed: false }, 1);
      vi.advanceTimersByTime(30_000);
      expect(closed).toEqual([]);
      // Then no answer at all: frozen mid-shutdown, nothing will end them.
      pool.checked('10.0.0.1:6443', { ok: false, detail: 'no answer within 700 ms', resumed: false, silent: true }, 700);
      expect(closed).toEqual([0, 1, 2]);
      expect(logs.at(-1)).toMatch(/m1 .* stopped answering while shutting down: no answer within 700 ms; closing its 3 connection\(s\)/);
    } finally {
      vi.useRealTimers();
    }
  });

  it('whatever is still open SHUTDOWN_GRACE_MS after it said so is closed', () => {
    vi.useFakeTimers();
    try {
      const pool = new Pool(two(), () => {});
      const closed = withConns(pool, '10.0.0.1:6443', 2);
      pool.checked('10.0.0.1:6443', shutdown, 5);
      vi.advanceTimersByTime(SHUTDOWN_GRACE_MS - 1);
      expect(closed).toEqual([]);
      vi.advanceTimersByTime(1);
      expect(closed).toEqual([0, 1]);
    } finally {
      vi.useRealTimers();
    }
  });

  it('unready for any other reason (its etcd, a check that times out): its connections are closed at once, so watches move to a healthy one', () => {
    for (const r of [
      { ok: false, detail: 'HTTP 500', resumed: false },
      { ok: false, detail: 'no answer within 700 ms', resumed: false, silent: true },
    ]) {
      const pool = new Pool(two(), () => {});
      const closed = withConns(pool, '10.0.0.1:6443', 2);
      pool.checked('10.0.0.1:6443', r, 5);
      expect(closed, r.detail).toEqual([0, 1]);
    }
  });
});

describe('kube-lb config', () => {
  it('fills defaults: least_conn, idle timeout above client-go watch timeouts, /readyz checks every second', () => {
    const cfg = proxyConfigSchema.parse({ backends: [{ name: 'm1', address: '192.0.2.11', port: 6443 }] });
    expect(cfg.balance).toBe('least_conn');
    expect(cfg.idleTimeout).toBeGreaterThan(10 * 60_000);
    expect(cfg.active).toMatchObject({ enabled: true, path: '/readyz', interval: 1000, rise: 2, fall: 2 });
    expect(cfg.listen).toBe('127.0.0.1:8443');
  });

  it('rejects unknown keys and an empty backend list', () => {
    expect(proxyConfigSchema.safeParse({ backends: [], colour: 1 }).success).toBe(false);
  });
});

describe('kube-lb --check-config and --version', () => {
  it('accepts a good config, rejects a bad one with its path, and prints its version', async () => {
    const fs = await import('node:fs');
    const os = await import('node:os');
    const path = await import('node:path');
    const { main } = await import('../../src/proxy/main.js');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kube-lb-cfg-'));
    const good = path.join(dir, 'kube-lb.yaml');
    fs.writeFileSync(good, 'backends:\n  - { name: m1, address: 192.0.2.11, port: 6443 }\n');
    const bad = path.join(dir, 'bad.json');
    fs.writeFileSync(bad, JSON.stringify({ backends: [{ name: 'm1', address: '192.0.2.11', port: 70000 }], balance: 'random' }));
    const out: string[] = [];
    const write = process.stdout.write.bind(process.stdout);
    const errWrite = process.stderr.write.bind(process.stderr);
    process.stdout.write = ((s: string) => (out.push(s), true)) as typeof process.stdout.write;
    process.stderr.write = ((s: string) => (out.push(s), true)) as typeof process.stderr.write;
    try {
      expect(await main(['--check-config', good])).toBe(0);
      expect(await main(['--check-config', bad])).toBe(1);
      expect(await main(['--version'])).toBe(0);
      expect(await main(['--bogus'])).toBe(2);
    } finally {
      process.stdout.write = write;
      process.stderr.write = errWrite;
    }
    expect(out.join('')).toMatch(/kube-lb\.yaml: ok \(1 backends, listen 127\.0\.0\.1:8443\)/);
    expect(out.join('')).toMatch(/bad\.json: backends\.0\.port: .*; balance: /);
    // In this process the runtime is this Node.js; the executable names its Bun (the lab test checks that).
    expect(out.join('')).toMatch(new RegExp(`^kube-lb 0\\.1\\.0 \\(Node\\.js ${process.versions.node.replace(/\./g, '\\.')}\\)$`, 'm'));
    expect(out.join('')).toMatch(/usage: kube-lb --config FILE/);
  });
});
