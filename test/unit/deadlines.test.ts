import { describe, expect, it } from 'vitest';
import { LocalConnection } from '../../src/connect/connection.js';
import { DEFAULT_DEADLINES } from '../../src/connect/deadlines.js';
import { resolveTarget } from '../../src/connect/targets.js';
import { ConnectError, DeadlineError, isNoAnswer } from '../../src/errors.js';
import { formatDiagnostic } from '../../src/inventory/diagnostics.js';
import { parseInventory } from '../../src/inventory/load.js';

const inventory = (extra: string) =>
  parseInventory(`
masters: [{ name: m1, address: 192.0.2.11 }]
nodes: [{ name: node-1, address: 192.0.2.21 }]
nginx: { version: 1.22.1, sources: [http://x.invalid/n.tar.gz], sha256: ${'a'.repeat(64)} }
${extra}
`);

describe('deadlines of remote commands', () => {
  it('come from the inventory\'s timeouts, per kind of step; the rest keep their defaults', () => {
    const inv = inventory('timeouts: { facts: 90s, apply: 10m }').inventory!;
    const t = resolveTarget(inv, inv.nodes[0]!);
    expect(t.deadlines).toEqual({ facts: 90_000, apply: 600_000 });
    expect(DEFAULT_DEADLINES.facts).toBe(60_000);
  });

  it('a bad or unknown timeout is an inventory error naming its path', () => {
    const said = (extra: string) => inventory(extra).diagnostics.map((d) => formatDiagnostic('inv.yaml', d)).join('\n');
    expect(inventory('timeouts: { facts: soon }').inventory).toBeUndefined();
    expect(said('timeouts: { facts: soon }')).toMatch(/inv\.yaml:\d+:\d+: timeouts\.facts: must be a duration/);
    expect(said('timeouts: { fact: 1m }')).toMatch(/timeouts.*fact/);
    expect(said('timeouts: { apply: 10ms }')).toMatch(/timeouts\.apply: must be from 1s to 2h/);
  });

  it('bound this machine\'s commands too: past the deadline the script is killed and the error names the step', async () => {
    const c = new LocalConnection({ build: 300 });
    const t0 = Date.now();
    const e = await c.execAsRoot('sleep 20', { kind: 'build' }).then(() => undefined, (x: unknown) => x);
    expect(e).toBeInstanceOf(DeadlineError);
    expect((e as Error).message).toBe('timed out after 0.3 s in building nginx');
    expect(Date.now() - t0).toBeLessThan(5000);
    expect((await c.execAsRoot('echo fine', { kind: 'build' })).stdout).toBe('fine\n');
  });

  it('silence is no answer; a refusal, a reset or a refused key is one', () => {
    expect(isNoAnswer(new DeadlineError('node-1', 'gathering facts', 60))).toBe(true);
    expect(isNoAnswer(new DeadlineError('node-1', 'gathering facts', 60, 1024))).toBe(false);
    expect(isNoAnswer(new ConnectError('node-1', 'unreachable', 'cannot reach 10.0.0.1:22: Timed out while waiting for handshake'))).toBe(true);
    expect(isNoAnswer(new ConnectError('node-1', 'unreachable', 'bastion x cannot open a connection to 10.0.0.1:22: no connection within 10 s'))).toBe(true);
    expect(isNoAnswer(new ConnectError('node-1', 'unreachable', 'cannot reach 10.0.0.1:22: connect ECONNREFUSED 10.0.0.1:22'))).toBe(false);
    expect(isNoAnswer(new ConnectError('node-1', 'unreachable', 'cannot reach 10.0.0.1:22: connect EHOSTUNREACH 10.0.0.1:22'))).toBe(false);
    expect(isNoAnswer(new ConnectError('node-1', 'auth', 'authentication failed for root@10.0.0.1:22'))).toBe(false);
  });
});
