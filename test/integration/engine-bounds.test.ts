/**
 * What a deploy promises past its simplest case, checked on the lab's nodes:
 * - `--concurrency` below the node count: never more nodes held at once than asked (sshd's own
 *   log of sessions on every node says so, and --json's peakSessions), each node let go after
 *   planning and taken again for its turn, and a node changed in between replanned from fresh facts;
 * - `--max-fail-percent` above 0: a node that fails (cut off from every apiserver) is tolerated or
 *   stops the roll, at the percentages where the rounding decides;
 * - an unfinished run's journal in `staging` (the node lost power while staging) and `verified`:
 *   status and --check say what the next deploy will do, and it does that.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SshConnection } from '../../src/connect/ssh.js';
import { takeLock } from '../../src/engine/lock.js';
import { run } from '../../src/util/exec.js';
import { k8sha, startK8sha } from '../helpers/cli.js';
import { deployJson, inventoryVariant, serviceState } from '../helpers/deploy.js';
import { inContainer, lab, labContainer, nodeTarget, restoreMasters, untilBooted } from '../helpers/lab.js';

type Node = { name: string; address: string };
const nodes = () => lab().nodes as Node[];
const CONF = '/opt/k8s/kube-nginx/conf/kube-nginx.conf';
const J = '/var/lib/k8s-ha/journal';

const maxFails = (n: number) => inventoryVariant(`max-fails-${n}`, (inv) => (inv.lb.maxFails = n));

/** Polls `probe` every 100 ms until it returns something, for at most `limitMs`. */
async function until<T>(what: string, probe: () => Promise<T | undefined>, limitMs = 30_000): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() - t0 > limitMs) throw new Error(`${what}: not seen within ${limitMs / 1000} s`);
    await sleep(100);
  }
}

/** What is on a node that a run leaves behind: the journal's state word, staged files and backups. Read with docker exec, not SSH. */
async function leftovers(n: Node): Promise<{ journal: string; files: string }> {
  const out = await inContainer(
    n.name,
    `echo "$(cat ${J}/state 2>/dev/null)"; find /opt/k8s /etc/systemd/system \\( -name '*.k8s-ha-new.*' -o -name '*.k8s-ha-prev.*' \\) 2>/dev/null | sort | tr '\\n' ' '`,
  );
  const [journal = '', files = ''] = out.split('\n');
  return { journal: journal.trim(), files: files.trim() };
}

interface SshSession {
  port: string;
  start: number;
  end?: number;
}

/**
 * The SSH sessions sshd logged on a node that began in [from, to] (ms): from `Accepted publickey`
 * to `Received disconnect`/`Disconnected from user`, matched by the client's port. Read with
 * docker exec, so the reading adds no session of its own.
 */
async function sshdSessions(n: Node, from: number, to: number): Promise<SshSession[]> {
  const out = await inContainer(n.name, `journalctl -q --no-pager -t sshd -o short-unix --since @${Math.floor(from / 1000) - 1}`);
  const sessions: SshSession[] = [];
  for (const line of out.split('\n')) {
    const t = Number(line.split(' ')[0]) * 1000;
    const accepted = /Accepted publickey for \S+ from \S+ port (\d+)/.exec(line);
    if (accepted && t >= from && t <= to) sessions.push({ port: accepted[1]!, start: t });
    // Its end: the next line naming its port (`Received disconnect from ... port N`, `Disconnected from user ...`).
    const ended = !accepted && / port (\d+)\b/.exec(line);
    const s = ended && sessions.find((x) => x.port === ended[1] && x.end === undefined);
    if (s) s.end = t;
  }
  return sessions;
}

/** Every node's sshd sessions begun while `fn` ran, once sshd has logged the end of each. */
async function sessionsDuring<T>(fn: () => Promise<T>): Promise<{ result: T; sessions: Record<string, SshSession[]> }> {
  const from = Date.now();
  const result = await fn();
  const to = Date.now();
  const sessions: Record<string, SshSession[]> = {};
  for (const n of nodes()) sessions[n.name] = await until(`${n.name}: sshd logging the end of every session`, async () => {
    const s = await sshdSessions(n, from, to);
    return s.every((x) => x.end !== undefined) ? s : undefined;
  }, 10_000);
  return { result, sessions };
}

/** The most sessions open at one moment, across all nodes (an end and a start at the same instant: the end first). */
function mostAtOnce(sessions: SshSession[]): number {
  const events = sessions.flatMap((s) => [[s.start, 1], [s.end!, -1]] as const).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let open = 0;
  let most = 0;
  for (const [, d] of events) most = Math.max(most, (open += d));
  return most;
}

async function maxFailsOn(n: Node): Promise<string> {
  return (await inContainer(n.name, `grep -o 'max_fails=[0-9]*' ${CONF} | sort -u`)).trim();
}

/** The run id a deploy prints first (`deploy RUN: ...`), for one that is killed before its report. */
const runIdOf = (stderr: string) => /^deploy (\S+): /m.exec(stderr)![1]!;

/** Faults this file puts on nodes, undone whatever happens. */
const undo: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  const r = await deployJson(['-i', lab().inventory, '--serial', '100%']);
  expect(r.code, r.stderr).toBe(0);
});

afterAll(async () => {
  for (const u of undo.splice(0).reverse()) await u().catch(() => undefined);
  await restoreMasters();
  // Every node on the lab's own inventory, no journal left, as the other files expect.
  const r = await deployJson(['-i', lab().inventory, '--serial', '100%']);
  expect(r.code, r.stderr).toBe(0);
  for (const n of nodes()) expect(await leftovers(n)).toEqual({ journal: '', files: '' });
});

describe.sequential('--concurrency below the node count', () => {
  it('--concurrency 2 over 3 nodes: every node deployed and verified; never more than 2 held at once; each let go after planning and taken again for its turn', async () => {
    const { result: r, sessions } = await sessionsDuring(() => deployJson(['-i', maxFails(4), '--concurrency', '2', '--serial', '100%']));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('at most 2 at a time');
    expect(r.stderr).toContain('== Connect to 3 nodes, lock and plan (2 at a time)');
    for (const n of nodes()) {
      expect(r.report.hosts[n.name]).toMatchObject({ status: 'changed', config: 'new', verified: { state: 'active (running)', status: 200 } });
      expect(await maxFailsOn(n)).toBe('max_fails=4');
      expect(await serviceState(n)).toMatchObject({ active: 'active', sub: 'running', staged: '0' });
      // One session to plan (then closed), one for its turn: reconnected, relocked, replanned.
      expect(sessions[n.name]!.length, JSON.stringify(sessions[n.name])).toBe(2);
    }
    expect(r.report.peakSessions).toBeLessThanOrEqual(2);
    expect(mostAtOnce(Object.values(sessions).flat()), JSON.stringify(sessions)).toBeLessThanOrEqual(2);

    // Every node fits within --concurrency: one session each, kept from planning to the end.
    const back = await sessionsDuring(() => deployJson(['-i', lab().inventory, '--concurrency', '3', '--serial', '100%']));
    expect(back.result.code, back.result.stderr).toBe(0);
    for (const n of nodes()) {
      expect(back.result.report.hosts[n.name]!.status).toBe('changed');
      expect(back.sessions[n.name]!.length, JSON.stringify(back.sessions[n.name])).toBe(1);
    }
  });

  it('nodes whose balancer is not serving (as at a first install): one session each beyond --concurrency, planned, applied and verified in one slot', async () => {
    // Stopped by hand: a change disturbs no serving balancer, so it goes at once rather than in a roll.
    for (const n of nodes()) await inContainer(n.name, 'systemctl stop kube-nginx');
    undo.push(() => Promise.all(nodes().map((n) => inContainer(n.name, 'systemctl start kube-nginx'))));
    const { result: r, sessions } = await sessionsDuring(() => deployJson(['-i', maxFails(7), '--concurrency', '2', '--serial', '100%']));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('planned 3 of 3 nodes: 3 with changes (3 applied and verified as planned: no serving balancer disturbed)');
    for (const n of nodes()) {
      expect(r.report.hosts[n.name]).toMatchObject({ status: 'changed', config: 'new', verified: { state: 'active (running)', status: 200 } });
      expect(await maxFailsOn(n)).toBe('max_fails=7');
      // One login, lock and facts for the whole of it: no second session for its turn. Two commands (the
      // lock with the facts; the change) and the probe: the journal is closed over the lock's channel.
      expect(r.report.hosts[n.name]!.ssh).toMatchObject({ logins: 1, execs: 2, channels: 3, tlsFull: 1, tlsResumed: 0 });
      expect(sessions[n.name]!.length, JSON.stringify(sessions[n.name])).toBe(1);
    }
    expect(r.report.peakSessions).toBeLessThanOrEqual(2);
    expect(mostAtOnce(Object.values(sessions).flat()), JSON.stringify(sessions)).toBeLessThanOrEqual(2);
    // Back on the lab's own config (max_fails=3), which the next test edits by hand.
    const back = await deployJson(['-i', lab().inventory, '--serial', '100%']);
    expect(back.code, back.stderr).toBe(0);
  });

  it('a node changed between its planning and its turn is replanned from fresh facts: node-3, given the new config by hand meanwhile, is left as it is', async () => {
    const [n1, , n3] = nodes();
    // node-1 is held by another run for a while: its planning waits, while node-2 and node-3 are planned and let go.
    const other = await SshConnection.open(nodeTarget(n1!));
    undo.push(async () => other.close());
    const held = await takeLock(other, 'ops@elsewhere (pid 1) since now, run OTHER', 0);
    expect(held.held).toBe(true);
    const from = Date.now();
    const d = startK8sha(['deploy', '-i', maxFails(5), '--concurrency', '2', '--serial', '100%', '--wait-lock', '60s', '--json']);
    await d.waitFor(/node-1: waiting for the lock: held by ops@elsewhere/);
    // node-3 planned: its session has come and gone.
    await until('node-3 planned and let go', async () => ((await sshdSessions(n3!, from, Date.now())).some((s) => s.end) ? true : undefined));
    // Someone puts the new config on node-3 by hand (and reloads it) before the deploy's turn comes.
    const workers = async () => (await inContainer(n3!.name, 'ps -o pid= --ppid "$(systemctl show -p MainPID --value kube-nginx)"')).split(/\s+/).filter(Boolean).sort();
    const old = await workers();
    await inContainer(n3!.name, `sed 's/max_fails=3 /max_fails=5 /' ${CONF} > ${CONF}.hand && mv ${CONF}.hand ${CONF} && systemctl reload kube-nginx`);
    // A reload replaces the workers: once the old ones are gone, the new ones are what a later reload would replace.
    const handWorkers = await until('node-3 reloaded by hand', async () => {
      const w = await workers();
      return w.length && !w.some((p) => old.includes(p)) ? w : undefined;
    });
    if (held.held) held.release();
    other.close();
    const r = await d.done;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('planned 3 of 3 nodes: 3 with changes');
    const report = JSON.parse(r.stdout);
    expect(report.hosts['node-1']).toMatchObject({ status: 'changed', config: 'new' });
    expect(report.hosts['node-2']).toMatchObject({ status: 'changed', config: 'new' });
    // Fresh facts at its turn: nothing left to do, nothing reloaded, and verified as it stands.
    expect(report.hosts['node-3']).toMatchObject({ status: 'ok', changed: 0, verified: { state: 'active (running)', status: 200 } });
    expect(await workers()).toEqual(handWorkers);
    const sha = async (n: Node) => (await serviceState(n)).configSha;
    expect(await sha(n3!)).toBe(await sha(n1!));
    expect((await sshdSessions(n3!, from, Date.now())).length).toBeGreaterThanOrEqual(2);
  });
});

describe.sequential('--max-fail-percent above 0', () => {
  const n2 = () => nodes()[1]!;
  /** node-2 cut off from every apiserver: its balancer runs, and verify can never pass there. */
  const cutOff = async (on: boolean) => {
    const routes = lab().masters.map((m) => `ip route ${on ? 'add' : 'del'} prohibit ${m.address}/32`).join(' && ');
    await inContainer(n2().name, on ? routes : `${routes} || true`);
  };

  it('3 nodes rolled one at a time, node-2 failing: 33% tolerates no failure (the roll stops, node-3 untouched); 34% tolerates one (node-3 deployed); exit 3 both times', async () => {
    await cutOff(true);
    undo.push(() => cutOff(false));
    const [n1, , n3] = nodes();
    const before = { n2: await serviceState(n2()), n3: await serviceState(n3!) };

    // floor(3 × 33%) = 0 failures tolerated: node-2's failure stops the roll after its batch.
    const low = await deployJson(['-i', maxFails(6), '--serial', '1', '--max-fail-percent', '33', '--verify-timeout', '3s']);
    expect(low.code, low.stderr).toBe(3);
    expect(low.report.roll).toMatchObject({ serial: 1, batches: [['node-1'], ['node-2'], ['node-3']], failLimit: 0, stoppedAfter: 2 });
    expect(low.stderr).toContain('3 batches; stop after 1 failure)');
    expect(low.stderr).toContain('-- roll stopped after batch 2: 1 node failed (node-2), more than --max-fail-percent allows (0)');
    expect(low.report.hosts['node-1']).toMatchObject({ status: 'changed', config: 'new', batch: 1 });
    expect(low.report.hosts['node-2']).toMatchObject({ status: 'failed', config: 'previous', batch: 2, rollback: { ok: true } });
    expect(low.report.hosts['node-3']).toMatchObject({ status: 'skipped', config: 'previous' });
    expect(await maxFailsOn(n1!)).toBe('max_fails=6');
    expect(await serviceState(n2())).toEqual(before.n2);
    expect(await serviceState(n3!)).toEqual(before.n3);
    for (const n of nodes()) expect(await leftovers(n)).toEqual({ journal: '', files: '' });

    // floor(3 × 34%) = 1 failure tolerated: the roll goes on past node-2.
    const high = await deployJson(['-i', maxFails(7), '--serial', '1', '--max-fail-percent', '34', '--verify-timeout', '3s']);
    expect(high.code, high.stderr).toBe(3);
    expect(high.report.ok).toBe(false);
    expect(high.report.roll).toMatchObject({ batches: [['node-1'], ['node-2'], ['node-3']], failLimit: 1 });
    expect(high.report.roll!.stoppedAfter).toBeUndefined();
    expect(high.stderr).toContain('3 batches; stop after 2 failures)');
    expect(high.report.hosts['node-1']).toMatchObject({ status: 'changed', config: 'new', batch: 1 });
    expect(high.report.hosts['node-2']).toMatchObject({ status: 'failed', config: 'previous', batch: 2, rollback: { ok: true } });
    expect(high.report.hosts['node-3']).toMatchObject({ status: 'changed', config: 'new', batch: 3, verified: { state: 'active (running)', status: 200 } });
    expect(high.report.totals).toMatchObject({ changed: 2, failed: 1, skipped: 0 });
    expect([await maxFailsOn(n1!), await maxFailsOn(n3!)]).toEqual(['max_fails=7', 'max_fails=7']);
    expect((await serviceState(n2())).configSha).toBe(before.n2.configSha);
    for (const n of nodes()) expect(await leftovers(n)).toEqual({ journal: '', files: '' });

    await cutOff(false);
    const back = await deployJson(['-i', lab().inventory, '--serial', '100%']);
    expect(back.code, back.stderr).toBe(0);
  });
});

describe.sequential('an unfinished run found by the next deploy', () => {
  it('staging: node-3 loses power while it stages (kube-nginx -t waiting on a DNS server that never answers); status and --check say the next deploy removes the staged files; it does, and node-3 serves its old config', async () => {
    const n3 = nodes()[2]!;
    const id = await labContainer(n3.name);
    const before = await serviceState(n3);
    const resolv = await inContainer(n3.name, 'cat /etc/resolv.conf');
    const restoreResolv = () => inContainer(n3.name, `printf '%s' '${resolv.replace(/'/g, `'\\''`)}' > /etc/resolv.conf`);
    undo.push(restoreResolv);
    const named = inventoryVariant('master-3-by-name', (inv) => (inv.masters[2].address = 'master-3.k8s-ha-lab.test'));
    // musl's resolver (the static kube-nginx) ignores the port-unreachable answer and waits out the timeout.
    await inContainer(n3.name, "printf 'nameserver 127.0.0.1\\noptions timeout:30 attempts:1\\n' > /etc/resolv.conf");

    const d = startK8sha(['deploy', '-i', named, '--limit', n3.name, '--json']);
    await d.waitFor(/node-3: committing/);
    const runId = runIdOf(d.output().stderr);
    const staged = `${CONF}.k8s-ha-new.${runId}`;
    await until('node-3 staging', async () => {
      const l = await leftovers(n3);
      return l.journal === 'staging' && l.files === staged ? true : undefined;
    });
    // Power lost: the node, and the controller with it.
    await run('docker', ['kill', id]);
    d.signal('SIGKILL');
    await d.done;
    await run('docker', ['start', id]);
    await untilBooted(n3);
    await restoreResolv();

    // Rebooted on its old files, the journal and the staged file still there.
    expect(await leftovers(n3)).toEqual({ journal: 'staging', files: staged });
    expect(await serviceState(n3)).toMatchObject({ active: 'active', sub: 'running', configSha: before.configSha });
    const said = `run ${runId} \\(\\S+ \\(pid \\d+\\)\\) did not finish \\(staging\\): no live file had moved: the next deploy removes its staged files and closes it`;
    expect((await k8sha(['status', '-i', lab().inventory])).stdout).toMatch(new RegExp(`${n3.name}: ${said}`));
    const check = await k8sha(['deploy', '-i', lab().inventory, '--check']);
    expect(check.stdout).toMatch(new RegExp(`${n3.name}: an unfinished run ${runId} \\(\\S+ \\(pid \\d+\\), staging\\): no live file had moved: the next deploy removes its staged files and closes it`));
    expect(await leftovers(n3)).toEqual({ journal: 'staging', files: staged });

    const again = await deployJson(['-i', lab().inventory]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.report.hosts[n3.name]!.recovered).toMatch(new RegExp(`^run ${runId} .* stopped before changing anything: its staged files removed$`));
    expect(again.report.hosts[n3.name]).toMatchObject({ status: 'ok', verified: { state: 'active (running)', status: 200 } });
    expect(await leftovers(n3)).toEqual({ journal: '', files: '' });
    expect((await serviceState(n3)).configSha).toBe(before.configSha);
  });

  it('verified: a change verified but not yet closed; status and --check say the next deploy keeps it; it does, closes the journal and removes the backups', async () => {
    const n1 = nodes()[0]!;
    const before = await serviceState(n1);
    const two = inventoryVariant('two-masters', (inv) => (inv.masters = inv.masters.slice(0, 2)));
    // Killed while verifying (its apiservers hung for the moment): committed, never verified.
    const hung = lab().masters.slice(0, 2).map((m) => m.name);
    for (const m of hung) expect((await k8sha(['lab', 'master', '--dir', lab().dir, m, 'freeze'])).code).toBe(0);
    undo.push(restoreMasters);
    const d = startK8sha(['deploy', '-i', two, '--limit', n1.name]);
    await d.waitFor(/node-1: verifying/);
    d.signal('SIGKILL');
    await d.done;
    for (const m of hung) await k8sha(['lab', 'master', '--dir', lab().dir, m, 'thaw']);
    const runId = runIdOf(d.output().stdout);
    const backup = `${CONF}.k8s-ha-prev.${runId}`;
    expect(await leftovers(n1)).toEqual({ journal: 'committed', files: backup });
    // Then its verify passes and finishJournal records it (`echo verified > $J/state`, as it does) and the
    // node goes down before its finish.sh closes the journal: an instant no kill can aim at, so the word
    // is written here exactly as that script writes it, on the journal the killed run left.
    await inContainer(n1.name, `echo verified > ${J}/state`);
    const kept = (await serviceState(n1)).configSha;
    expect(kept).not.toBe(before.configSha);

    const said = 'its change was verified: the next deploy keeps it, closes it and removes its backups';
    expect((await k8sha(['status', '-i', lab().inventory])).stdout).toMatch(new RegExp(`${n1.name}: run ${runId} \\(\\S+ \\(pid \\d+\\)\\) did not finish \\(verified\\): ${said}`));
    expect((await k8sha(['deploy', '-i', two, '--limit', n1.name, '--check'])).stdout).toMatch(new RegExp(`${n1.name}: an unfinished run ${runId} \\(\\S+ \\(pid \\d+\\), verified\\): ${said}`));

    const again = await deployJson(['-i', two, '--limit', n1.name]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.report.hosts[n1.name]!.recovered).toMatch(new RegExp(`^run ${runId} .* had verified: finished and closed$`));
    // The change stands: nothing left to do, the same config served.
    expect(again.report.hosts[n1.name]).toMatchObject({ status: 'ok', changed: 0, verified: { state: 'active (running)', status: 200 } });
    expect(await leftovers(n1)).toEqual({ journal: '', files: '' });
    expect(await serviceState(n1)).toMatchObject({ active: 'active', sub: 'running', configSha: kept });
  });
});
