/** The engine's pure parts with plain data: the implementation choice, the roll plan, results from plan + outcome, and what the renderers print. */
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { abortNowText, plainRenderer, renderCheck, renderRecap, Tracker } from '../../src/cli/deploy-render.js';
import { exitCodeOf } from '../../src/cli/deploy.js';
import { chooseImpl } from '../../src/engine/deploy.js';
import { hostResult, type PlannedHost } from '../../src/engine/host.js';
import type { HostPlan } from '../../src/engine/plan.js';
import type { PlaybookStep } from '../../src/engine/playbook.js';
import { configState, planRoll } from '../../src/engine/roll.js';
import type { DeployReport, HostReport } from '../../src/engine/run.js';
import type { UnitFacts } from '../../src/facts/host.js';
import { OPERATIONS } from '../../src/ops/catalogue.js';
import type { StepPlan } from '../../src/ops/types.js';
import { hostFacts } from '../helpers/facts.js';
import { zeroCounts } from '../../src/connect/counts.js';

const unit = (activeState: string): UnitFacts => ({ loadState: 'loaded', activeState, subState: activeState === 'active' ? 'running' : 'dead', unitFileState: 'enabled', activeEnterTimestamp: '', mainPid: 1 });
const os = (arch: string, glibc: string) => ({ id: 'debian', versionId: '11', prettyName: 'Debian 11', arch, glibc });
const bookworm = { osKey: 'debian-12-x86_64-glibc2.36' };

describe('chooseImpl', () => {
  it('nginx and kube-lb are taken as asked, whatever the node', () => {
    expect(chooseImpl('nginx', { os: os('aarch64', '2.17'), units: {} }, { nginx: [bookworm], kubeLb: true })).toEqual({ impl: 'nginx' });
    expect(chooseImpl('kube-lb', { os: os('x86_64', '2.36'), units: {} }, { nginx: [bookworm], kubeLb: true })).toEqual({ impl: 'kube-lb' });
  });

  it('auto: nginx where the built binary runs, kube-lb (with the reason) where it cannot', () => {
    expect(chooseImpl('auto', { os: os('x86_64', '2.36'), units: {} }, { nginx: [bookworm], kubeLb: true })).toEqual({ impl: 'nginx' });
    expect(chooseImpl('auto', { os: os('x86_64', '2.31'), units: {} }, { nginx: [bookworm], kubeLb: true })).toMatchObject({ impl: 'kube-lb', why: expect.stringMatching(/glibc/) });
    expect(chooseImpl('auto', { os: os('aarch64', '2.36'), units: {} }, { nginx: [bookworm], kubeLb: true })).toMatchObject({ impl: 'kube-lb', why: expect.stringMatching(/aarch64/) });
  });

  it('auto with one build per CPU architecture (build.host a list): nginx where one of them runs, kube-lb with every reason where none does', () => {
    const builds = { nginx: [{ osKey: 'static-musl-x86_64' }, { osKey: 'static-musl-aarch64' }], kubeLb: true };
    expect(chooseImpl('auto', { os: os('aarch64', '2.31'), units: {} }, builds)).toEqual({ impl: 'nginx' });
    expect(chooseImpl('auto', { os: os('x86_64', ''), units: {} }, builds)).toEqual({ impl: 'nginx' });
    expect(chooseImpl('auto', { os: os('riscv64', '2.36'), units: {} }, builds)).toEqual({
      impl: 'kube-lb',
      why: 'the nginx binary is for x86_64, this node is riscv64; the nginx binary is for aarch64, this node is riscv64',
    });
  });

  it('auto without a kube-lb build to fall back on stays on nginx (verify then tells the truth)', () => {
    expect(chooseImpl('auto', { os: os('x86_64', '2.31'), units: {} }, { nginx: [bookworm], kubeLb: false })).toEqual({ impl: 'nginx' });
  });

  it('auto when nginx cannot be built: kube-lb, except where nginx serves already: kept, its binary left as it is', () => {
    const builds = { nginxUnbuildable: 'nginx cannot be built: no gcc', kubeLb: true };
    expect(chooseImpl('auto', { os: os('x86_64', '2.36'), units: {} }, builds)).toEqual({ impl: 'kube-lb', why: 'nginx cannot be built: no gcc' });
    expect(chooseImpl('auto', { os: os('x86_64', '2.36'), units: { 'kube-nginx': unit('active') } }, builds)).toMatchObject({ impl: 'nginx', keepBinary: true });
  });
});

function step(type: string, args: unknown, name = type): PlaybookStep {
  return { name, type: 'op', op: OPERATIONS[type]!, args: OPERATIONS[type]!.args.parse(args) };
}
const verify: PlaybookStep = { name: 'verify', type: 'verify', args: { unit: 'kube-nginx', listen: '127.0.0.1:8443', path: '/readyz' } };

function planned(name: string, o: { serving: boolean; changes: boolean }): PlannedHost {
  const facts = hostFacts({ units: { 'kube-nginx': unit(o.serving ? 'active' : 'inactive') } });
  const config = step('template', { template: 't', dest: '/etc/k.conf' }, 'config');
  const service = step('service', { name: 'kube-nginx' }, 'service');
  const cfgPlan: StepPlan = o.changes
    ? { changes: [{ kind: 'put', path: '/etc/k.conf', content: Buffer.from('x'), sha256: 'x', mode: '644' }], notify: ['reload'], summary: 'write /etc/k.conf (content changed)' }
    : { changes: [], notify: [], summary: '/etc/k.conf up to date' };
  const svcPlan: StepPlan = o.changes ? { changes: [{ kind: 'run', command: 'systemctl reload kube-nginx', label: 'reload' }], notify: [], summary: 'reload' } : { changes: [], notify: [], summary: 'kube-nginx running, enabled' };
  const plan: HostPlan = { node: { name, address: '192.0.2.1' }, facts, steps: [{ step: config, plan: cfgPlan }, { step: service, plan: svcPlan }, { step: verify }] };
  return { job: { node: plan.node, target: { address: '192.0.2.1' }, steps: [config, service, verify], base: { artifacts: {}, render: () => '' } } as never, plan, unit: 'kube-nginx', timings: {} };
}

describe('planRoll', () => {
  it('serving nodes with changes roll in batches; first installs and no-ops go at once', () => {
    const hosts = [
      planned('a', { serving: true, changes: true }),
      planned('b', { serving: true, changes: false }),
      planned('c', { serving: false, changes: true }),
      planned('d', { serving: true, changes: true }),
      planned('e', { serving: true, changes: true }),
    ];
    const r = planRoll(hosts, { count: 2 }, 50);
    expect(r.immediate.map((h) => h.plan.node.name)).toEqual(['b', 'c']);
    expect(r.batches.map((b) => b.map((h) => h.plan.node.name))).toEqual([['a', 'd'], ['e']]);
    expect(r.failLimit).toBe(1);
    expect(planRoll(hosts, { percent: 25 }, 0).batches.map((b) => b.length)).toEqual([1, 1, 1]);
  });
});

describe('hostResult: step results from the plan and the outcome', () => {
  it('a validation failure names the step; later steps are not reached; nothing was replaced', () => {
    const r = hostResult(planned('a', { serving: true, changes: true }), {
      sent: true,
      script: { staged: false, committed: false, closed: false, failure: { step: 'config', kind: 'invalid', code: 1, output: 'nginx: [emerg] host not found\nnginx: test failed' } },
    });
    expect(r.steps.map((s) => [s.name, s.status])).toEqual([['config', 'failed'], ['service', 'skipped'], ['verify', 'skipped']]);
    expect(r.steps[0]!.summary).toBe('validation failed, nothing was replaced: nginx: [emerg] host not found');
    expect(r.error).toBe('config: validation failed, nothing was replaced\nnginx: [emerg] host not found\nnginx: test failed');
    expect(configState(r)).toBe('previous');
  });

  it('a failed verify after a commit: the verify step failed; restored → previous, not restored → unknown', () => {
    const p = planned('a', { serving: true, changes: true });
    const base = { sent: true, script: { staged: true, committed: true, closed: false, state: 'active running' }, verify: { ok: false, summary: 'no apiserver answered (gave up after 15 s)' } };
    const restored = hostResult(p, { ...base, rollback: { ok: true, detail: 'previous files restored' } });
    expect(restored.steps.map((s) => s.status)).toEqual(['changed', 'changed', 'failed']);
    expect(restored.error).toBe('verify: no apiserver answered (gave up after 15 s)');
    expect(configState(restored)).toBe('previous');
    expect(configState(hostResult(p, { ...base, rollback: { ok: false, detail: 'x' } }))).toBe('unknown');
  });

  it('verified: changed, new config', () => {
    const r = hostResult(planned('a', { serving: true, changes: true }), {
      sent: true,
      script: { staged: true, committed: true, closed: false, state: 'active running' },
      verify: { ok: true, summary: 'ok', verified: { state: 'active (running)', status: 200, backend: 'm1' } },
      finish: { staged: false, committed: false, closed: true },
    });
    expect([r.status, r.changed, configState(r)]).toEqual(['changed', 2, 'new']);
  });
});

function host(partial: Partial<HostReport>): HostReport {
  return { address: '192.0.2.1', status: 'ok', ok: 3, changed: 0, failed: 0, steps: [], config: 'new', impl: { wanted: 'nginx', impl: 'nginx', running: 'nginx' }, ssh: zeroCounts(), ...partial };
}

function report(partial: Partial<DeployReport>): DeployReport {
  return {
    ok: true,
    runId: '20261128T030000-abcdef',
    inventoryFile: '/x/inventory.yaml',
    listen: '127.0.0.1:8443',
    check: false,
    durationMs: 1200,
    build: 'nginx from the cache',
    totals: { ok: 0, changed: 0, failed: 0, unreachable: 0, skipped: 0, locked: 0 },
    peakSessions: 3,
    bastionLogins: 0,
    ssh: { ...zeroCounts(), controllerCpuMs: 0 },
    hosts: {},
    ...partial,
  };
}

describe('recap and check views', () => {
  it('an interrupted run: marked INTERRUPTED, nodes by configuration, the locked node explained; exit 130', () => {
    const r = report({
      ok: false,
      interrupted: { signal: 'SIGINT' },
      totals: { ok: 0, changed: 1, failed: 0, unreachable: 0, skipped: 1, locked: 1 },
      hosts: {
        'node-1': host({ status: 'changed', changed: 2, config: 'new', verified: { state: 'active (running)', status: 200, backend: 'master-2' } }),
        'node-2': host({ status: 'skipped', config: 'previous', error: 'the run was interrupted (SIGINT)' }),
        'node-3': host({ status: 'locked', config: 'previous', error: 'locked by bob@ctl (pid 9) since t, run R', lockedBy: 'bob@ctl (pid 9) since t, run R', hint: 'wait for it, or rerun with --wait-lock 5m' }),
      },
    });
    const text = renderRecap(r, false);
    expect(text).toContain('run 20261128T030000-abcdef, INTERRUPTED (SIGINT)');
    expect(text).toContain('totals: 1 changed, 0 ok, 0 failed, 0 unreachable, 1 locked by another run, 1 not reached');
    expect(text).toContain('running the new configuration: node-1');
    expect(text).toContain('running the previous configuration: node-2, node-3');
    expect(text).toMatch(/node-3 \(192\.0\.2\.1\) locked:\n  locked by bob@ctl \(pid 9\) since t, run R\n  fix: wait for it, or rerun with --wait-lock 5m/);
    expect(exitCodeOf(r)).toBe(130);
  });

  it('check: an unknown binary and an unfinished run are said; exit 5 only when something would change', () => {
    const r = report({
      check: true,
      hosts: {
        'node-1': host({ steps: [{ name: 'binary', status: 'skipped', summary: 'unknown: nginx not built yet (--check builds nothing)' }], check: { service: 'nothing', changes: [] } }),
        'node-2': host({ unfinished: { run: 'R1', by: 'alice@ctl (pid 1)', started: 't', state: 'committed' }, check: { service: 'reload kube-nginx', changes: [{ step: 'config', summary: 'write x' }] } }),
      },
    });
    const text = renderCheck(r, false);
    expect(text).toContain('node-1: up to date (binary: unknown: nginx not built yet (--check builds nothing))');
    expect(text).toContain('node-2: an unfinished run R1 (alice@ctl (pid 1), committed): the next deploy verifies its change first');
    expect(text).toContain('node-2 (nginx): would reload kube-nginx');
    expect(exitCodeOf(r)).toBe(5);
    expect(exitCodeOf({ ...r, hosts: { 'node-1': r.hosts['node-1']! } })).toBe(0);
    // A node that could not be checked is never called up to date.
    const down = report({ check: true, ok: false, hosts: { 'node-1': host({ status: 'unreachable', error: 'node-1: cannot reach' }) } });
    expect(renderCheck(down, false)).toContain('1 node could not be checked (exit 3)');
    expect(renderCheck(down, false)).not.toContain('up to date');
    expect(exitCodeOf(down)).toBe(3);
  });
});

describe('progress renderers', () => {
  it('plain lines: the stopping line names what is being finished; a second Ctrl-C names the unknown nodes', () => {
    const out = new PassThrough();
    let text = '';
    out.on('data', (b) => (text += b));
    const r = plainRenderer(out);
    r.emit({ type: 'start', runId: 'R', inventoryFile: '/x/inv.yaml', nodes: ['node-1', 'node-2'], check: false, warnings: [], concurrency: 64 });
    r.emit({ type: 'host-phase', name: 'node-1', phase: 'committing' });
    r.emit({ type: 'host-phase', name: 'node-1', phase: 'verifying' });
    r.emit({ type: 'verify-wait', name: 'node-1', waitingFor: 'no apiserver answered through 127.0.0.1:8443', elapsedMs: 6100, deadlineMs: 15000 });
    r.emit({ type: 'host-phase', name: 'node-2', phase: 'gathering facts' });
    r.emit({ type: 'interrupted', signal: 'SIGINT', inFlight: [{ name: 'node-1', phase: 'verifying' }] });
    expect(text).toContain('node-1: verifying: no apiserver answered through 127.0.0.1:8443, 6 s of 15 s\n');
    expect(text).toContain('stopping (SIGINT): finishing node-1 (verifying); no new nodes will start; press Ctrl-C again to abort now\n');
    expect(r.tracker.unsettled()).toEqual([{ name: 'node-1', phase: 'verifying' }]);
    expect(abortNowText(r.tracker, 'SIGINT')).toMatch(/state unknown on: node-1 \(was verifying\)\n.*journal.*\n  repair with: k8s-ha /);
  });

  it('a node that is done is no longer unsettled', () => {
    const t = new Tracker();
    t.on({ type: 'host-phase', name: 'n', phase: 'committing' });
    t.on({ type: 'host-done', result: { name: 'n', address: 'a', status: 'changed', ok: 1, changed: 1, failed: 0, steps: [] } });
    expect(t.unsettled()).toEqual([]);
  });
});

/** A status report around these nodes, every one healthy: the view's input as plain data. */
function statusReport<N>(nodes: N[], masters: Record<string, { direct: number; local: number }> = {}) {
  return {
    nodes,
    healthy: nodes.length,
    down: 0,
    unknown: 0,
    probes: { limit: 32, perTarget: 12, peak: 4, peakPerTarget: 2, started: 12, retried: 0 },
    phases: { connectMs: 10, factsMs: 20, probesMs: 30 },
    drifted: 0,
    masters,
    warnings: [],
    ssh: { ...zeroCounts(), controllerCpuMs: 0 },
    durationMs: 300,
  };
}

describe('status view', () => {
  it('names a node another run is working on and a node with an unfinished run', async () => {
    const { renderStatus } = await import('../../src/cli/status.js');
    const node = (name: string, extra: object) => ({
      name,
      address: '192.0.2.1',
      reachable: true,
      impl: 'nginx' as const,
      wanted: 'nginx' as const,
      service: 'active (running)',
      version: 'nginx/1.22.1',
      drift: { config: 'ok' as const },
      listening: true,
      masters: [{ name: 'm1', address: '192.0.2.9', port: 6443, direct: { status: 200 }, viaLocal: 1 }],
      local: { listening: true, attempts: 2, ok: 2, unknown: 0, timedOut: 0, errors: [] },
      healthy: true,
      health: 'healthy' as const,
      ...extra,
    });
    const text = renderStatus(
      statusReport(
        [node('node-1', { lockedBy: 'bob@ctl (pid 9) since t, run R2' }), node('node-2', { unfinished: { run: 'R1', by: 'alice@ctl (pid 1)', started: 't', state: 'committed' } })],
        { m1: { direct: 2, local: 2 } },
      ),
    );
    expect(text).toContain('node-1: a k8s-ha run is working on it: locked by bob@ctl (pid 9) since t, run R2');
    expect(text).toContain('node-2: run R1 (alice@ctl (pid 1)) did not finish (committed): the next deploy verifies its change first');
    expect(text).toContain('2/2 nodes healthy');
  });

  it('says what the next deploy does about an unfinished run, by its journal state (the table of docs/deploy.md)', async () => {
    const { renderStatus } = await import('../../src/cli/status.js');
    const said = (state: 'staging' | 'committing' | 'committed' | 'verified') => {
      const unfinished = { run: 'R1', by: 'alice@ctl (pid 1)', started: 't', state };
      const status = renderStatus(
        statusReport([{ name: 'node-2', address: '192.0.2.1', reachable: true, impl: 'nginx', wanted: 'nginx', service: 'active (running)', drift: { config: 'ok' }, listening: true, masters: [], healthy: true, health: 'healthy', unfinished }] as never),
      );
      const check = renderCheck(report({ check: true, hosts: { 'node-2': host({ unfinished, check: { service: 'nothing', changes: [] } }) } }), false);
      return [/node-2: run R1 \(alice@ctl \(pid 1\)\) did not finish \(\w+\): (.*)/.exec(status)?.[1], /node-2: an unfinished run R1 \(alice@ctl \(pid 1\), \w+\): (.*)/.exec(check)?.[1]];
    };
    const both = (line: string) => [line, line];
    expect(said('staging')).toEqual(both('no live file had moved: the next deploy removes its staged files and closes it'));
    expect(said('committing')).toEqual(both('the next deploy verifies its change first and restores the previous files if that fails'));
    expect(said('committed')).toEqual(both('the next deploy verifies its change first and restores the previous files if that fails'));
    expect(said('verified')).toEqual(both('its change was verified: the next deploy keeps it, closes it and removes its backups'));
  });

  it("nginx's connections (nginx.statusListen): a CONNS column with stub_status's active count, unknown and why when it did not answer; no column without the field", async () => {
    const { renderStatus } = await import('../../src/cli/status.js');
    const { stripVTControlCharacters } = await import('node:util');
    const node = (name: string, extra: object) => ({ name, address: '192.0.2.1', reachable: true, impl: 'nginx', wanted: 'nginx', service: 'active (running)', drift: { config: 'ok' }, listening: true, masters: [], healthy: true, health: 'healthy', ...extra });
    const counts = { active: 3, reading: 0, writing: 1, waiting: 0, accepts: 9, handled: 9, requests: 12 };
    const text = stripVTControlCharacters(
      renderStatus(
        statusReport([
          node('node-1', { connections: counts }),
          node('node-2', { connections: 'unknown', connectionsError: 'GET http://127.0.0.1:8081/stub_status: connect ECONNREFUSED 127.0.0.1:8081' }),
        ] as never),
      ),
    );
    const rows = text.split('\n');
    expect(rows[0]).toMatch(/LISTEN\s+CONNS/);
    expect(rows.find((l) => l.startsWith('node-1'))).toMatch(/up\s+3\s*$/);
    expect(rows.find((l) => l.startsWith('node-2 '))).toMatch(/up\s+unknown\s*$/);
    expect(text).toContain("node-2: nginx's connections unknown: GET http://127.0.0.1:8081/stub_status: connect ECONNREFUSED 127.0.0.1:8081");
    expect(stripVTControlCharacters(renderStatus(statusReport([node('node-1', {})] as never)))).not.toContain('CONNS');
  });
});
