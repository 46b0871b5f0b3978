/**
 * What an operator reads when many hosts fail: one line per distinct cause, counts that add up,
 * and nothing said about hosts or a VIP that could not be asked. Plain data.
 */
import { describe, expect, it } from 'vitest';
import { byCause, causeLine, ownCause } from '../../src/cli/causes.js';
import { nameList } from '../../src/inventory/diagnostics.js';
import { driftText } from '../../src/cli/status.js';
import { heldText } from '../../src/engine/vip.js';

const behind = (n: number) => ({
  name: `node-${String(n).padStart(2, '0')}`,
  address: `10.0.1.${10 + n}`,
  status: 'unreachable',
  error: `node-${String(n).padStart(2, '0')}: cannot reach 10.0.1.${10 + n}:22 through bastion ops@10.0.0.5, which failed: cannot reach 10.0.0.5:22: connect ECONNREFUSED`,
  hint: 'check that the bastion is up',
});

describe('failures grouped by cause', () => {
  it("forty nodes behind one bastion that is down are one cause, with each node's own name and address taken out", () => {
    const groups = byCause(Array.from({ length: 40 }, (_, i) => behind(i + 1)));
    expect(groups).toHaveLength(1);
    expect(causeLine(groups[0]!)).toBe(
      '40 nodes (node-01, node-02, node-03, node-04, node-05, node-06, node-07, node-08 and 32 more): unreachable: cannot reach <address>:22 through bastion ops@10.0.0.5, which failed: cannot reach 10.0.0.5:22: connect ECONNREFUSED',
    );
    expect(groups[0]!.hint).toBe('check that the bastion is up');
  });

  it('one host is said in its own words, without its name twice', () => {
    const [g] = byCause([behind(3)]);
    expect(causeLine(g!)).toBe('node-03: unreachable: cannot reach 10.0.1.13:22 through bastion ops@10.0.0.5, which failed: cannot reach 10.0.0.5:22: connect ECONNREFUSED');
    expect(ownCause('node-03', 'node-03: x\ny')).toBe('x');
    expect(ownCause('node-03', 'cannot become root')).toBe('cannot become root');
  });

  it('different causes, or the same words with another status, stay apart, in the order met', () => {
    const other = { ...behind(2), error: 'node-02: cannot reach 10.0.1.12:22: connect EHOSTUNREACH' };
    const locked = { ...behind(4), status: 'locked' };
    const groups = byCause([behind(1), other, behind(3), locked]);
    expect(groups.map((g) => [g.status, g.names])).toEqual([
      ['unreachable', ['node-01', 'node-03']],
      ['unreachable', ['node-02']],
      ['locked', ['node-04']],
    ]);
    // An address that only starts like another node's is not taken for it.
    const near = byCause([{ name: 'a', address: '10.0.0.1', status: 'unreachable', error: 'a: cannot reach 10.0.0.1:22 via 10.0.0.12' }]);
    expect(near[0]!.cause).toBe('cannot reach 10.0.0.1:22 via 10.0.0.12');
    expect(nameList(['a', 'b'])).toBe('a, b');
  });
});

describe('nothing claimed about what was not asked', () => {
  it("the VIP: held by one, unknown when no VIP host answered, not held only when all did", () => {
    expect(heldText(['m1'], 1, 3)).toBe('held by m1');
    expect(heldText([], 0, 3)).toBe('unknown: none of the 3 VIP hosts could be asked');
    expect(heldText([], 2, 3)).toBe('held by none of the 2 VIP hosts asked; 1 could not be asked');
    expect(heldText([], 3, 3)).toBe('not held');
  });

  it('drift: "none differs" only when every node was compared', () => {
    expect(driftText(0, 40, 40)).toBe(', none differs from the inventory');
    expect(driftText(0, 0, 40)).toBe(', none could be compared with the inventory');
    expect(driftText(0, 30, 40)).toBe(', none of the 30 reached differs from the inventory; 10 could not be compared');
    expect(driftText(2, 30, 40)).toBe(', 2 differ from the inventory (k8s-ha deploy --check --diff shows how); 10 could not be compared');
  });
});
