/**
 * Text from nodes reaches the terminal as text: control characters (ESC above all) are shown as
 * escapes, never obeyed, wherever remote text is rendered.
 */
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { plainRenderer, renderRecap } from '../../src/cli/deploy-render.js';
import { renderStatus } from '../../src/cli/status.js';
import type { ClusterStatus, NodeStatus } from '../../src/engine/status.js';
import type { DeployReport } from '../../src/engine/run.js';
import { CommandError } from '../../src/errors.js';
import { printable, printableDeep } from '../../src/util/printable.js';
import { zeroCounts } from '../../src/connect/counts.js';

// A clear screen, a window title, a C1 CSI, a carriage return that would hide what came before, DEL.
const HOSTILE = 'nginx\x1b[2J\x1b]0;pwned\x07\x9b31m\rfake ok\x7f';
const SHOWN = 'nginx\\x1b[2J\\x1b]0;pwned\\x07\\x9b31m\\x0dfake ok\\x7f';
/** Any C0 or C1 control character but newline and tab. */
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/;

describe('printable', () => {
  it('shows C0 and C1 control characters as \\xNN, keeps newlines, tabs and other text', () => {
    expect(printable(HOSTILE)).toBe(SHOWN);
    expect(printable('line 1\n\tline 2 — é 漢')).toBe('line 1\n\tline 2 — é 漢');
    expect(printable('\x00\x1f\x80\x9f')).toBe('\\x00\\x1f\\x80\\x9f');
  });

  it('goes through every string of a report, copying it', () => {
    const report = { a: HOSTILE, list: [HOSTILE, 3, null], inner: { b: HOSTILE, ok: true } };
    expect(printableDeep(report)).toEqual({ a: SHOWN, list: [SHOWN, 3, null], inner: { b: SHOWN, ok: true } });
    expect(report.a).toBe(HOSTILE);
  });
});

describe('where remote text is rendered', () => {
  it("a failed command's message: the host's stderr and the command as text", () => {
    const e = new CommandError('node-1', 'nginx -t', 1, null, `nginx: [emerg] ${HOSTILE}\n`);
    expect(e.message).not.toMatch(CONTROL);
    expect(e.message).toContain(SHOWN);
  });

  it('status: a service state and error read from a node', () => {
    const node = (over: Partial<NodeStatus>): NodeStatus => ({ name: 'n1', address: '10.0.0.1', reachable: true, wanted: 'nginx', impl: 'nginx', drift: {}, masters: [], healthy: false, health: 'down', ...over });
    const s: ClusterStatus = {
      nodes: [node({ service: `failed (${HOSTILE})`, local: { errors: [HOSTILE] } as never }), node({ name: 'n2', reachable: false, error: HOSTILE })],
      healthy: 0,
      drifted: 0,
      down: 2,
      unknown: 0,
      masters: {},
      probes: { limit: 1, perTarget: 1, peak: 0, peakPerTarget: 0, started: 0, retried: 0 },
      phases: { connectMs: 0, factsMs: 0, probesMs: 0 },
      warnings: [],
      ssh: { ...zeroCounts(), controllerCpuMs: 0 },
      durationMs: 1,
    };
    const out = renderStatus(s);
    expect(out).not.toMatch(CONTROL);
    expect(out).toContain(SHOWN);
  });

  it('deploy: progress lines and the recap (an error, the journal)', () => {
    const stream = new PassThrough();
    let written = '';
    stream.on('data', (b) => (written += b));
    const r = plainRenderer(stream);
    const result = { name: 'n1', address: '10.0.0.1', status: 'failed' as const, ok: 0, changed: 0, failed: 1, steps: [], error: `verify failed: ${HOSTILE}`, journal: HOSTILE };
    r.emit({ type: 'host-phase', name: 'n1', phase: 'verifying', detail: HOSTILE } as never);
    r.emit({ type: 'host-done', result });
    expect(written).not.toMatch(CONTROL);
    expect(written).toContain(SHOWN);
    const report = { inventoryFile: 'inv.yaml', runId: 'R', durationMs: 1, listen: '127.0.0.1:8443', hosts: { n1: { ...result, config: 'previous' } }, totals: { changed: 0, ok: 0, failed: 1, unreachable: 0, locked: 0, skipped: 0 } } as unknown as DeployReport;
    const recap = renderRecap(report, false);
    expect(recap).not.toMatch(CONTROL);
    expect(recap).toContain(`    ${SHOWN}`);
  });
});

describe('bidirectional controls', () => {
  it('are shown, not obeyed: a line cannot be made to read backwards', () => {
    expect(printable('ok \u202eetadpu\u202c done\u2066x\u2069')).toBe('ok \\u202eetadpu\\u202c done\\u2066x\\u2069');
  });
});
