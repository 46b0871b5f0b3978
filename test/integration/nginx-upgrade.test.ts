/**
 * A new nginx binary (other build flags) for nodes serving with the same unit: upgraded in place as
 * nginx documents it (USR2, WINCH, then QUIT once verified), under traffic through every node's
 * 127.0.0.1:8443; and a new binary whose verify fails, put back with nginx's own rollback (HUP the
 * old master, QUIT the new one). The last test puts every node back on the standard binary.
 */
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { k8sha, ROOT } from '../helpers/cli.js';
import { deployJson } from '../helpers/deploy.js';
import { lab, scratchDir, withNode } from '../helpers/lab.js';
import { withLoad } from '../helpers/load.js';

const NGINX = '/opt/k8s/kube-nginx';
const PID = `${NGINX}/logs/kube-nginx.pid`;

/** The built-in kube-nginx playbook, built with one more stream module: another binary, the same unit and config. */
function otherBuild(): string {
  const pb = YAML.parse(fs.readFileSync(path.join(ROOT, 'playbooks', 'kube-nginx.yaml'), 'utf8'));
  pb.steps.find((s: { name: string }) => s.name === 'build nginx').nginxBuild.configure.push('--with-stream_realip_module');
  const file = path.join(scratchDir(), 'kube-nginx.realip.yaml');
  fs.writeFileSync(file, YAML.stringify(pb));
  return file;
}

/** What each node runs: the unit's main PID, the PID file, the binary's build flags, an old master still there. */
async function masterOf(node: { name: string; address: string }) {
  return withNode(node, async (c) => {
    const [mainPid, pidFile, realip, oldbin, parsePid] = (
      await c.execOk(
        `systemctl show -p MainPID --value kube-nginx; cat ${PID}; ${NGINX}/sbin/kube-nginx -V 2>&1 | grep -c stream_realip || true; ` +
          `[ -e ${PID}.oldbin ] && echo oldbin || echo none; journalctl -u kube-nginx --no-pager -o cat | grep -c 'Failed to parse PID' || true`,
      )
    )
      .trim()
      .split('\n');
    return { mainPid: Number(mainPid), pidFile: Number(pidFile), realip: realip === '1', oldbin: oldbin === 'oldbin', parsePidLines: Number(parsePid) };
  });
}

/** Until the old master has left (its workers end by worker_shutdown_timeout, 10 s). */
async function oldMasterGone(node: { name: string; address: string }): Promise<boolean> {
  return withNode(node, async (c) => (await c.exec(`for i in $(seq 200); do [ -e ${PID}.oldbin ] || exit 0; sleep 0.1; done; exit 1`)).code === 0);
}

let pb: string;

beforeAll(async () => {
  pb = otherBuild();
  const base = await deployJson(['-i', lab().inventory, '--serial', '100%']);
  expect(base.code, base.stderr).toBe(0);
});

afterAll(async () => {
  for (const m of lab().masters) await k8sha(['lab', 'master', '--dir', lab().dir, m.name, 'ready']);
  await deployJson(['-i', lab().inventory, '--serial', '100%']);
});

describe.sequential('nginx binary upgrade in place', () => {
  it('a new binary under traffic: no failed request, the watches flow on, the new master is the unit\'s main process', async () => {
    const before = await Promise.all(lab().nodes.map(masterOf));
    for (const b of before) expect(b).toMatchObject({ realip: false, oldbin: false, parsePidLines: 0 });
    const started = Date.now();
    let ended = 0;
    const { result: d, reports } = await withLoad(lab().nodes, async () => {
      const r = await deployJson(['-i', lab().inventory, '--playbook', pb]);
      ended = Date.now();
      // The watches are read a little longer: an event now comes from a worker past the upgrade.
      await new Promise((res) => setTimeout(res, 2500));
      return r;
    });
    expect(d.code, d.stderr).toBe(0);
    for (const n of lab().nodes) {
      const h = d.report.hosts[n.name]!;
      expect(h.steps.find((s) => s.name === 'service')!.summary).toMatch(/^upgrade in place, retire the old master$/);
      expect(h.batch).toBeGreaterThan(0); // a running balancer disturbed: it rolls
      expect(h.verified).toMatchObject({ state: 'active (running)', status: 200 });
    }
    for (const r of reports) {
      console.log(`${r.node}: ${r.requests} requests through 127.0.0.1:8443 during the upgrade, ${r.failures.length} failed; watch: ${r.watch.events} events, ${r.watch.closedAt ? `closed after ${r.watch.closedAt - started} ms` : 'still open'}`);
      expect(r.failures).toEqual([]);
      expect(r.requests).toBeGreaterThan(20);
      // The watch opened before the upgrade (on an old worker) is not cut by it: it streams on (the
      // stand-in sends an event a second) until the deploy ends, or until worker_shutdown_timeout
      // (10 s) after that node's WINCH, as after a reload.
      expect(r.watch.error).toBeUndefined();
      const cut = r.watch.closedAt && r.watch.closedAt < ended ? r.watch.closedAt : undefined;
      // Events up to its end: the deploy's end, or its close.
      expect(r.watch.lastEventAt).toBeGreaterThan((cut ?? ended) - 2000);
      if (cut) expect(cut - started).toBeGreaterThanOrEqual(9000);
    }
    for (const [i, n] of lab().nodes.entries()) {
      expect(await oldMasterGone(n)).toBe(true);
      const after = await masterOf(n);
      expect(after).toMatchObject({ realip: true, oldbin: false, parsePidLines: 0 });
      // systemd followed the PID file from the old master to the new one.
      expect(after.mainPid).not.toBe(before[i]!.mainPid);
      expect(after.mainPid).toBe(after.pidFile);
      await withNode(n, async (c) => expect(await c.execOk(`ps -o args= -p ${after.mainPid}`)).toMatch(/^nginx: master process /));
    }
  });

  it('a new binary that fails verify: nginx\'s own rollback, the old master serves on with the old binary', async () => {
    const node = lab().nodes[0]!;
    const before = await masterOf(node);
    // Every apiserver answers /readyz 500: no balancer can be verified, whatever its binary.
    for (const m of lab().masters) await k8sha(['lab', 'master', '--dir', lab().dir, m.name, 'unready']);
    let r;
    try {
      r = await deployJson(['-i', lab().inventory, '--limit', node.name, '--verify-timeout', '4s']);
    } finally {
      for (const m of lab().masters) await k8sha(['lab', 'master', '--dir', lab().dir, m.name, 'ready']);
    }
    expect(r.code).toBe(3);
    const h = r.report.hosts[node.name]!;
    expect(h.status).toBe('failed');
    expect(h.error).toMatch(/^verify: /);
    expect(h.rollback).toMatchObject({ ok: true });
    const after = await masterOf(node);
    // The same master as before, in the PID file again; no new one left; the binary put back.
    expect(after).toMatchObject({ mainPid: before.mainPid, pidFile: before.mainPid, oldbin: false, realip: true, parsePidLines: 0 });
    await withNode(node, async (c) => expect(await c.execOk(`pgrep -c -f '^nginx: master process'`)).toBe('1\n'));
    // And it serves: a deploy with masters ready verifies (and upgrades this node in place back to the standard binary).
    const again = await deployJson(['-i', lab().inventory]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.report.hosts[node.name]!.steps.find((s) => s.name === 'service')!.summary).toMatch(/^upgrade in place/);
  });
});
