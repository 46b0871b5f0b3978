/**
 * The scripts that change a host are real shell: run them here on a temporary tree, with the
 * journal in a temporary folder, the way a node runs them.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { finishAnswer, FINISH_ASK, lockProbe, lockScript, parseLockOutput, parseLockProbe } from '../../src/engine/lock.js';
import { stillHoldsLock } from '../../src/engine/scripts.js';
import type { HostPlan } from '../../src/engine/plan.js';
import type { PlaybookStep } from '../../src/engine/playbook.js';
import {
  applyLockPath,
  afterOutput,
  applyScript,
  backupPath,
  closeJournal,
  finishJournal,
  parseJournal,
  parseScriptOutput,
  restoreFromJournal,
  restoreScript,
  stagedPath,
} from '../../src/engine/scripts.js';
import { retireOldMaster, upgradeInPlace, upgradeRollback } from '../../src/ops/service.js';
import { quote } from '../../src/util/quote.js';
import { tarGzOf } from '../../src/engine/tarstream.js';
import { OPERATIONS } from '../../src/ops/catalogue.js';
import { run } from '../../src/util/exec.js';
import { hostFacts } from '../helpers/facts.js';

const node = { name: 'node-1', address: '192.0.2.21' };
const RUN = '20261128T180000-aaaaaa';

function step(type: string, args: unknown, name = type): PlaybookStep {
  return { name, type: 'op', op: OPERATIONS[type]!, args: OPERATIONS[type]!.args.parse(args) };
}

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function tree(validate: (dest: string) => string, opts: { after?: (dir: string) => string; newFile?: boolean; check?: (dest: string) => string } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-scripts-'));
  dirs.push(dir);
  const dest = path.join(dir, 'conf', 'app.conf');
  const journalDir = path.join(dir, 'state', 'journal');
  const plan: HostPlan = {
    node,
    facts: hostFacts(),
    steps: [
      { step: step('directory', { path: path.join(dir, 'conf') }, 'directories'), plan: { changes: [{ kind: 'mkdir', path: path.join(dir, 'conf'), mode: '755' }], notify: [], summary: '' } },
      {
        step: step('template', { template: 't', dest }, 'config file'),
        plan: { changes: [{ kind: 'put', path: dest, content: Buffer.from('new\n'), sha256: 'x', mode: '600', validate: validate(dest) }], notify: [], summary: '' },
      },
      {
        step: step('command', { run: 'true', unless: 'false' }, 'service'),
        plan: {
          changes: [
            { kind: 'run', command: `echo ran >> ${dir}/ran`, label: 'x' },
            ...(opts.check ? [{ kind: 'run' as const, command: opts.check(dest), label: 'check', when: 'validate' as const }] : []),
            ...(opts.after ? [{ kind: 'run' as const, command: opts.after(dir), label: 'after', when: 'verified' as const }] : []),
          ],
          notify: [],
          summary: '',
        },
      },
    ],
  };
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  // The facts say whether the file stood there before this run.
  if (opts.newFile) plan.facts.files[dest] = null;
  else fs.writeFileSync(dest, 'old\n');
  const tar = tarGzOf([{ content: Buffer.from('new\n'), sha256: 'x' }]);
  const apply = (backup: boolean, runId = RUN) => run('sh', ['-c', applyScript(plan, { runId, by: 'me@here (pid 1)', backup, journalDir })], { input: tar });
  return { dir, dest, plan, journalDir, apply };
}

describe('apply script', () => {
  it('journals, stages beside the live file with the run id, validates, commits, and leaves a committed journal with a backup', async () => {
    const t = tree((d) => `grep -q new ${d}`);
    const r = await t.apply(true);
    const out = parseScriptOutput(r.stdout, r.stderr);
    expect(out).toMatchObject({ staged: true, committed: true });
    expect(out.failure).toBeUndefined();
    expect(fs.readFileSync(t.dest, 'utf8')).toBe('new\n');
    expect((fs.statSync(t.dest).mode & 0o777).toString(8)).toBe('600');
    expect(fs.readFileSync(backupPath(t.dest, RUN), 'utf8')).toBe('old\n');
    expect(fs.existsSync(stagedPath(t.dest, RUN))).toBe(false);
    expect(fs.readFileSync(path.join(t.dir, 'ran'), 'utf8')).toBe('ran\n');
    const j = parseJournal(`${fs.readFileSync(path.join(t.journalDir, 'run.json'), 'utf8')}\n@@state-word\n${fs.readFileSync(path.join(t.journalDir, 'state'), 'utf8')}`)!;
    expect(j).toMatchObject({ run: RUN, by: 'me@here (pid 1)', state: 'committed', restorable: true });
    expect(j.files).toEqual([{ path: t.dest, staged: stagedPath(t.dest, RUN), backup: backupPath(t.dest, RUN) }]);
  });

  it('a check across files runs once every file is staged and validated, reads staged copies, and stops the host before anything live moves', async () => {
    const seen = tree((d) => `grep -q new ${d}`, { check: (d) => `cat ${d} > ${path.dirname(d)}/../checked` });
    expect(parseScriptOutput((await seen.apply(true)).stdout)).toMatchObject({ staged: true, committed: true });
    // It read the staged copy (new), not the live file (old), and it ran before the commit's commands.
    expect(fs.readFileSync(path.join(seen.dir, 'checked'), 'utf8')).toBe('new\n');
    const refused = tree((d) => `grep -q new ${d}`, { check: () => 'echo "the new image cannot run it" >&2; false' });
    const out = parseScriptOutput((await refused.apply(true)).stdout);
    expect(out).toMatchObject({ staged: false, committed: false, failure: { step: 'service', kind: 'invalid', output: 'the new image cannot run it' } });
    expect(fs.readFileSync(refused.dest, 'utf8')).toBe('old\n');
    expect(fs.existsSync(path.join(refused.dir, 'ran'))).toBe(false);
    expect(fs.readdirSync(path.dirname(refused.dest))).toEqual(['app.conf']);
  });

  it("runs the check it is given once the change is committed, its @@ lines given back as printed; not when the commit stops", async () => {
    const after = 'echo "@@owner other 77 python3"; echo "line two"';
    const t = tree((d) => `grep -q new ${d}`);
    const ok = await run('sh', ['-c', applyScript(t.plan, { runId: RUN, by: 'x', backup: true, journalDir: t.journalDir, after })], { input: tarGzOf([{ content: Buffer.from('new\n'), sha256: 'x' }]) });
    expect(parseScriptOutput(ok.stdout)).toMatchObject({ committed: true });
    expect(afterOutput(ok.stdout)).toBe('@@owner other 77 python3\nline two\n');
    // Its lines are not the script's own: no @@ marker of it reaches parseScriptOutput.
    expect(ok.stdout).not.toMatch(/^@@owner/m);
    const refused = tree((d) => `grep -q nothing-of-the-kind ${d}`);
    const no = await run('sh', ['-c', applyScript(refused.plan, { runId: RUN, by: 'x', backup: true, journalDir: refused.journalDir, after })], { input: tarGzOf([{ content: Buffer.from('new\n'), sha256: 'x' }]) });
    expect(parseScriptOutput(no.stdout)).toMatchObject({ committed: false });
    expect(afterOutput(no.stdout)).toBeUndefined();
  });

  it('finish records the verify, runs what waited for it, and closes the journal: no backup, no staged file left', async () => {
    const t = tree((d) => `grep -q new ${d}`, { after: (dir) => `echo after > ${dir}/after` });
    await t.apply(true);
    expect(fs.existsSync(path.join(t.dir, 'after'))).toBe(false); // not before verify
    const f = await run('sh', ['-c', finishJournal(t.journalDir)]);
    expect(parseScriptOutput(f.stdout).closed).toBe(true);
    expect(fs.readFileSync(path.join(t.dir, 'after'), 'utf8')).toBe('after\n');
    expect(fs.existsSync(t.journalDir)).toBe(false);
    expect(fs.readdirSync(path.dirname(t.dest))).toEqual(['app.conf']);
  });

  it('restore from the journal puts the previous file back and closes the journal', async () => {
    const t = tree((d) => `grep -q new ${d}`);
    await t.apply(true);
    const r = await run('sh', ['-c', restoreFromJournal(t.journalDir)]);
    expect(parseScriptOutput(r.stdout).closed).toBe(true);
    expect(fs.readFileSync(t.dest, 'utf8')).toBe('old\n');
    expect(fs.readdirSync(path.dirname(t.dest))).toEqual(['app.conf']);
    expect(fs.existsSync(t.journalDir)).toBe(false);
  });

  it('restore removes a file this run created, where none stood before', async () => {
    const t = tree((d) => `grep -q new ${d}`, { newFile: true });
    await t.apply(true);
    expect(fs.readFileSync(t.dest, 'utf8')).toBe('new\n');
    await run('sh', ['-c', restoreFromJournal(t.journalDir)]);
    expect(fs.readdirSync(path.dirname(t.dest))).toEqual([]);
  });

  it('a restore that fails keeps the journal and the backup for the next run', async () => {
    const t = tree((d) => `grep -q new ${d}`);
    await t.apply(true);
    // The live path turned into a directory: mv cannot put the backup back over it.
    fs.rmSync(t.dest);
    fs.mkdirSync(path.join(t.dest, 'x'), { recursive: true });
    const r = await run('sh', ['-c', restoreFromJournal(t.journalDir)]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^@@restore-failed/m);
    expect(parseScriptOutput(r.stdout).closed).toBe(false);
    expect(fs.existsSync(path.join(t.journalDir, 'run.json'))).toBe(true);
    expect(fs.readFileSync(backupPath(t.dest, RUN), 'utf8')).toBe('old\n');
  });

  it('a journal left half-written by a crash (no run.json) does not block the next run', async () => {
    const t = tree((d) => `grep -q new ${d}`);
    fs.mkdirSync(t.journalDir, { recursive: true });
    fs.writeFileSync(path.join(t.journalDir, 'restore.sh'), 'half');
    const r = await t.apply(true);
    expect(parseScriptOutput(r.stdout).committed).toBe(true);
    expect(parseJournal(`${fs.readFileSync(path.join(t.journalDir, 'run.json'), 'utf8')}\n@@state-word\ncommitted`)!.run).toBe(RUN);
  });

  it("refuses to start while another run's journal is open, and touches nothing", async () => {
    const t = tree((d) => `grep -q new ${d}`);
    await t.apply(true);
    fs.writeFileSync(t.dest, 'old\n');
    const second = await t.apply(true, '20261128T180001-bbbbbb');
    expect(second.code).toBe(18);
    expect(parseScriptOutput(second.stdout).failure).toMatchObject({ step: 'journal', kind: 'failed' });
    expect(fs.readFileSync(t.dest, 'utf8')).toBe('old\n');
    expect(fs.existsSync(stagedPath(t.dest, '20261128T180001-bbbbbb'))).toBe(false);
    // Closing the first run's journal removes only its own files.
    await run('sh', ['-c', closeJournal(t.journalDir)]);
    expect(fs.readdirSync(path.dirname(t.dest))).toEqual(['app.conf']);
  });

  it('a failed validation names the step, prints its output, and leaves nothing staged, no journal, the live file as it was', async () => {
    const t = tree(() => 'echo "config is broken" >&2; exit 7');
    const r = await t.apply(true);
    expect(r.code).toBe(30);
    expect(parseScriptOutput(r.stdout)).toMatchObject({ staged: false, committed: false, failure: { step: 'config file', kind: 'invalid', code: 7, output: 'config is broken' } });
    expect(fs.readFileSync(t.dest, 'utf8')).toBe('old\n');
    expect(fs.readdirSync(path.dirname(t.dest))).toEqual(['app.conf']);
    expect(fs.existsSync(t.journalDir)).toBe(false);
  });

  it('a backup that cannot be made stops the commit before any live file moves', async () => {
    const t = tree((d) => `grep -q new ${d}`);
    fs.mkdirSync(backupPath(t.dest, RUN)); // cp cannot write a file where a directory stands
    fs.writeFileSync(path.join(backupPath(t.dest, RUN), 'x'), '');
    const r = await t.apply(true);
    expect(r.code).toBe(39);
    expect(parseScriptOutput(r.stdout)).toMatchObject({ staged: true, committed: false, failure: { step: 'config file', kind: 'failed', code: 39 } });
    expect(fs.readFileSync(t.dest, 'utf8')).toBe('old\n');
  });

  it('keeps going when the controller goes away mid-script (SIGHUP and a closed stdout are ignored)', async () => {
    const t = tree((d) => `sleep 0.3; grep -q new ${d}`);
    const script = applyScript(t.plan, { runId: RUN, by: 'x', backup: true, journalDir: t.journalDir });
    const child = spawn('sh', ['-c', script], { stdio: ['pipe', 'pipe', 'ignore'] });
    child.stdin.end(tarGzOf([{ content: Buffer.from('new\n'), sha256: 'x' }]));
    await new Promise((r) => setTimeout(r, 100));
    child.stdout.destroy(); // the reader is gone: later echoes hit a closed pipe
    child.kill('SIGHUP');
    await new Promise((r) => child.on('close', r));
    expect(fs.readFileSync(t.dest, 'utf8')).toBe('new\n');
    expect(fs.readFileSync(path.join(t.journalDir, 'state'), 'utf8').trim()).toBe('committed');
  });
});

describe('lock', () => {
  function lockDirs() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-lock-'));
    dirs.push(dir);
    return { lock: path.join(dir, 'run'), journal: path.join(dir, 'journal') };
  }

  /** Start a lock holder; resolves with its output once it says ready or exits. */
  function holdLock(script: string) {
    const child = spawn('sh', ['-c', script], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    const ready = new Promise<string>((resolve) => {
      child.stdout.on('data', (b) => {
        out += b;
        if (/^@@ready$/m.test(out)) resolve(out);
      });
      child.on('close', () => resolve(out));
    });
    return { child, ready, exited: new Promise((r) => child.on('close', r)) };
  }

  it('one holder at a time; the second is told who holds it; released when the holder\'s stdin closes', async () => {
    const d = lockDirs();
    const a = holdLock(lockScript('alice@ctl (pid 1) since t, run A', 0, d));
    expect(parseLockOutput(await a.ready)).toMatchObject({ locked: true, busy: false });
    const b = holdLock(lockScript('bob@ctl (pid 2) since t, run B', 0, d));
    const bOut = parseLockOutput(await b.ready);
    expect(bOut).toMatchObject({ locked: false, busy: true, holder: 'alice@ctl (pid 1) since t, run A' });
    // /proc/locks shows the holder without taking the lock: the probe status and --check run.
    const probe = await run('sh', ['-c', lockProbe(d)]);
    expect(parseLockProbe(probe.stdout).holder).toBe('alice@ctl (pid 1) since t, run A');
    a.child.stdin.end(); // the controller closes the channel (or dies)
    await a.exited;
    expect(parseLockProbe((await run('sh', ['-c', lockProbe(d)])).stdout).holder).toBeUndefined();
    const c = holdLock(lockScript('carol@ctl (pid 3) since t, run C', 0, d));
    expect(parseLockOutput(await c.ready).locked).toBe(true);
    c.child.stdin.end();
    await c.exited;
  });

  it('a holder that hears nothing from its controller for the lease lets go (a controller gone silent)', async () => {
    const d = lockDirs();
    // The channel stays open and says nothing, as when the controller's network dies without a FIN.
    const a = holdLock(lockScript('alice', 0, d, undefined, 1));
    expect(parseLockOutput(await a.ready).locked).toBe(true);
    const b = holdLock(lockScript('bob', 10, d));
    const out = await b.ready;
    expect(parseLockOutput(out).locked).toBe(true);
    await a.exited;
    expect(parseLockProbe((await run('sh', ['-c', lockProbe(d)])).stdout).holder).toBe('bob');
    b.child.stdin.end();
    await b.exited;
  });

  it('a holder whose controller renews the lease keeps the lock past it', async () => {
    const d = lockDirs();
    const a = holdLock(lockScript('alice', 0, d, undefined, 1));
    await a.ready;
    const renew = setInterval(() => a.child.stdin.write('.'), 300);
    try {
      await new Promise((r) => setTimeout(r, 2500));
      const b = holdLock(lockScript('bob', 0, d));
      expect(parseLockOutput(await b.ready)).toMatchObject({ locked: false, busy: true, holder: 'alice' });
    } finally {
      clearInterval(renew);
    }
    a.child.stdin.end();
    await a.exited;
  });

  it('facts stuck on a hung read do not keep the lock once the controller gives up on them', async () => {
    const d = lockDirs();
    const fifo = path.join(path.dirname(d.lock), 'hung');
    await run('mkfifo', [fifo]);
    // The facts read a file that never answers (a FIFO nobody writes: a read on a hung disk).
    const a = holdLock(lockScript('alice', 0, d, `sha256sum ${fifo}`));
    let out = '';
    a.child.stdout.on('data', (b) => (out += b));
    await new Promise((r) => setTimeout(r, 500));
    expect(out).toMatch(/^@@then$/m);
    expect(out).not.toMatch(/^@@ready$/m);
    a.child.stdin.end(); // the controller's deadline: it closes the channel
    const b = holdLock(lockScript('bob', 5, d));
    expect(parseLockOutput(await b.ready).locked).toBe(true);
    b.child.stdin.end();
    await b.exited;
    fs.writeFileSync(fifo, 'x'); // let the stuck read go
    await a.exited;
  });

  it('a script goes on only while its run holds the lock: not for another run, not once the lease is gone', async () => {
    const d = lockDirs();
    const a = holdLock(lockScript('alice@ctl (pid 1) since t, run R1', 0, d));
    await a.ready;
    const check = (id: string) => run('sh', ['-c', stillHoldsLock(d.lock, id) + '\necho going on']);
    expect((await check('R1')).stdout).toBe('going on\n');
    const other = await check('R2');
    expect([other.code, other.stdout]).toEqual([19, "@@failed lock 19\nrun R2 no longer holds the node's lock (its lease lapsed: the controller was silent for too long); nothing was changed\n"]);
    a.child.stdin.end();
    await a.exited;
    expect((await check('R1')).code).toBe(19);
  });

  it('with a wait, the second holder gets the lock once the first lets go', async () => {
    const d = lockDirs();
    const a = holdLock(lockScript('alice', 0, d));
    await a.ready;
    const b = holdLock(lockScript('bob', 5, d));
    setTimeout(() => a.child.stdin.end(), 300);
    const out = await b.ready;
    expect(out).toMatch(/^@@waiting\nalice/m);
    expect(parseLockOutput(out).locked).toBe(true);
    b.child.stdin.end();
    await b.exited;
  });

  it('runs the facts script with the lock when no journal is open, and not when one is', async () => {
    const d = lockDirs();
    const a = holdLock(lockScript('alice', 0, d, 'echo "@@os"; echo ID=test'));
    expect(await a.ready).toMatch(/^@@locked\n@@then\n@@os\nID=test\n@@then-rc 0\n@@then-end\n@@ready$/m);
    a.child.stdin.end();
    await a.exited;
    fs.mkdirSync(d.journal, { recursive: true });
    fs.writeFileSync(path.join(d.journal, 'run.json'), '{}');
    const b = holdLock(lockScript('bob', 0, d, 'echo "@@os"'));
    expect(await b.ready).not.toMatch(/@@then/);
    b.child.stdin.end();
    await b.exited;
  });

  it('the next holder waits for a script of a dead controller still moving files (the apply lock)', async () => {
    const d = lockDirs();
    // A dead controller's apply script: its journal is open, and it holds the apply lock for 800 ms.
    fs.mkdirSync(d.journal, { recursive: true });
    fs.writeFileSync(path.join(d.journal, 'run.json'), JSON.stringify({ run: 'R0', by: 'x', started: 's', files: [], restorable: true }));
    const script = spawn('flock', [applyLockPath(d.journal), 'sleep', '0.8']);
    const scriptDone = new Promise((r) => script.on('close', r));
    await new Promise((r) => setTimeout(r, 100));
    const t = Date.now();
    const a = holdLock(lockScript('alice', 0, d));
    expect(parseLockOutput(await a.ready).locked).toBe(true);
    expect(Date.now() - t).toBeGreaterThanOrEqual(600);
    a.child.stdin.end();
    await Promise.all([a.exited, scriptDone]);
  });

  /** A holder whose run has committed a change: its journal open, `finishSh` what waits for verify; what it says from now on. */
  async function holderWithJournal(holder: string, finishSh: string | ((journal: string) => string)) {
    const d = lockDirs();
    const a = holdLock(lockScript(holder, 0, d));
    await a.ready;
    fs.mkdirSync(d.journal, { recursive: true });
    fs.writeFileSync(path.join(d.journal, 'run.json'), '{"run":"R1"}');
    fs.writeFileSync(path.join(d.journal, 'finish.sh'), typeof finishSh === 'string' ? finishSh : finishSh(d.journal));
    let out = '';
    a.child.stdout.on('data', (b) => (out += b));
    /** Ask for the finish and wait (up to 4 s) for its answer. */
    const finish = async () => {
      a.child.stdin.write(FINISH_ASK);
      for (let i = 0; i < 200 && !/^@@finish-rc \d+\n/m.test(out); i++) await new Promise((r) => setTimeout(r, 20));
      return finishAnswer(out);
    };
    const holderNow = async () => parseLockProbe((await run('sh', ['-c', lockProbe(d)])).stdout).holder;
    return { a, d, finish, holderNow, said: () => out };
  }

  it('the holder finishes its run\'s journal when asked over its channel, and keeps the lock after', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-finish-'));
    dirs.push(dir);
    const marker = path.join(dir, 'finished');
    // As the real finish.sh ends: its close.sh removes the journal.
    const h = await holderWithJournal('alice@ctl (pid 1) since t, run R1', (journal) => `touch ${quote(marker)}; echo "what waits for verify ran"; rm -rf ${quote(journal)}\n`);
    h.a.child.stdin.write('.'); // a lease renewal is not a request
    const r = await h.finish();
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('what waits for verify ran\n@@closed\n');
    expect(parseScriptOutput(r.stdout)).toMatchObject({ closed: true });
    expect(fs.existsSync(marker)).toBe(true);
    expect(fs.existsSync(h.d.journal)).toBe(false);
    // Still held by the same holder, and released as before when the channel closes.
    expect(await h.holderNow()).toBe('alice@ctl (pid 1) since t, run R1');
    h.a.child.stdin.end();
    await h.a.exited;
    expect(await h.holderNow()).toBeUndefined();
  });

  it('a finish that fails says why and with its exit code, and the holder lives on', async () => {
    const h = await holderWithJournal('alice', 'echo "@@failed boot%20service 41"; echo "cannot enable it" >&2; rc=41\n');
    const r = await h.finish();
    expect(r.code).toBe(41);
    expect(parseScriptOutput(r.stdout)).toMatchObject({ closed: true, failure: { step: 'boot service', code: 41, output: 'cannot enable it' } });
    expect(await h.holderNow()).toBe('alice');
    h.a.child.stdin.end();
    await h.a.exited;
  });

  it('a finish that hangs does not keep the lock once the channel closes; a newline is a byte like any other', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-finish-'));
    dirs.push(dir);
    const done = path.join(dir, 'finish-done');
    const h = await holderWithJournal('alice', `sleep 1.5; touch ${quote(done)}\n`);
    h.a.child.stdin.write('\n'); // not the end of input: the lock stays
    await new Promise((r) => setTimeout(r, 200));
    expect(await h.holderNow()).toBe('alice');
    h.a.child.stdin.write(FINISH_ASK);
    for (let i = 0; i < 100 && !/^@@finish$/m.test(h.said()); i++) await new Promise((r) => setTimeout(r, 20));
    const exited = new Promise((r) => h.a.child.once('exit', r)); // the holder's exit (its output stays open while the finish runs)
    h.a.child.stdin.end(); // the controller goes while the finish runs
    await exited;
    // The lock went with the channel, while the finish still runs (under the apply lock) and completes.
    expect(await h.holderNow()).toBeUndefined();
    expect(fs.existsSync(done)).toBe(false);
    await h.a.exited;
    expect(fs.existsSync(done)).toBe(true);
  });

  it('reports an unfinished run\'s journal to the next holder', async () => {
    const d = lockDirs();
    fs.mkdirSync(d.journal, { recursive: true });
    fs.writeFileSync(path.join(d.journal, 'run.json'), JSON.stringify({ run: 'R1', by: 'x', started: 's', files: [], restorable: true }));
    fs.writeFileSync(path.join(d.journal, 'state'), 'committed\n');
    const a = holdLock(lockScript('alice', 0, d));
    expect(parseLockOutput(await a.ready).journal).toMatchObject({ run: 'R1', state: 'committed', restorable: true });
    a.child.stdin.end();
    await a.exited;
  });
});

describe('parsers', () => {
  it('a journal that cannot be read is a change in flight of unknown outcome', () => {
    expect(parseJournal('{not json\n@@state-word\nverified\n')).toMatchObject({ run: 'unknown', state: 'committing', restorable: false });
    expect(parseJournal('')).toBeUndefined();
  });

  it('script output: the failed step by name, decoded', () => {
    const out = parseScriptOutput('@@staged\n@@failed repoint%20kubeconfigs 41\nboom\n@@state active running\n');
    expect(out).toEqual({ staged: true, committed: false, closed: false, state: 'active running', failure: { step: 'repoint kubeconfigs', kind: 'failed', code: 41, output: 'boom' } });
  });
});

describe('paths in node-side scripts are quoted, not put in "..."', () => {
  // A path the inventory and playbook rules refuse: the scripts must still never run what it holds.
  const hostile = (dir: string) => `${dir}/a$(touch X)b.conf`;

  it("a restore that cannot move a backup back says so with the path as text, running nothing in it", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-scripts-'));
    dirs.push(dir);
    const live = hostile(dir);
    const plan: HostPlan = {
      node,
      facts: hostFacts(),
      steps: [{ step: step('template', { template: 't', dest: '/etc/x.conf' }, 'config'), plan: { changes: [{ kind: 'put', path: live, content: Buffer.from('x'), sha256: 'x', mode: '644' }], notify: [], summary: '' } }],
    };
    // The backup is there, and a non-empty directory stands where it goes back: mv fails, the message is printed.
    fs.writeFileSync(backupPath(live, RUN), 'old\n');
    fs.mkdirSync(live);
    fs.writeFileSync(path.join(live, 'in'), '');
    const r = await run('sh', ['-c', `cd ${quote(dir)} && ${restoreScript(plan, { runId: RUN })}`]);
    expect(r.stdout).toContain(`@@restore-failed cannot move ${backupPath(live, RUN)} back`);
    expect(fs.existsSync(path.join(dir, 'X'))).toBe(false);
    expect(parseScriptOutput(r.stdout).restoreFailure).toBe(`cannot move ${backupPath(live, RUN)} back`);
  });

  it('every message naming a path quotes it with quote()', () => {
    const p = '/srv/a$(reboot)b.conf';
    const plan: HostPlan = {
      node,
      facts: hostFacts({ files: { [p]: null } }),
      steps: [{ step: step('template', { template: 't', dest: '/etc/x.conf' }, 'config'), plan: { changes: [{ kind: 'put', path: p, content: Buffer.from('x'), sha256: 'x', mode: '644' }], notify: [], summary: '' } }],
    };
    const restore = restoreScript(plan, { runId: RUN });
    expect(restore).toContain(`echo ${quote(`@@restore-failed cannot remove ${p}`)}`);
    expect(restore).toContain(`echo ${quote(`@@restore-failed cannot move ${backupPath(p, RUN)} back`)}`);
    const lockDir = '/var/lib/a$(reboot)/journal';
    expect(finishJournal(lockDir)).toContain(`echo ${quote(`another k8s-ha script has held ${applyLockPath(lockDir)} for 120 s`)}`);
    const upgrade = upgradeInPlace(p, 'kube-nginx');
    expect(upgrade).toContain(quote(`(${p}.oldbin) still runs`));
    expect(upgrade).toContain(quote(`no running master of kube-nginx in ${p}`));
    // Nowhere is the path inside double quotes, where $( ) would run.
    for (const script of [restore, finishJournal(lockDir), upgrade, upgradeRollback(p, 'kube-nginx'), retireOldMaster(p, 'kube-nginx')]) {
      expect(script).not.toMatch(/"[^"']*\$\(reboot\)[^"]*"/);
    }
  });
});
