import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { expect } from 'vitest';
import { k8sha, type CliResult } from './cli.js';
import { SshConnection } from '../../src/connect/ssh.js';
import type { SshCounts } from '../../src/connect/counts.js';
import { failureWindow, watchNodePort, type ServedReport } from '../../src/lab/gap.js';
import type { LoadReport } from './load.js';
import { lab, nodeTarget, scratchDir, withNode } from './lab.js';

export interface DeployJson {
  ok: boolean;
  runId: string;
  interrupted?: { signal: string };
  peakSessions: number;
  durationMs: number;
  ssh: SshCounts & { controllerCpuMs: number };
  totals: { ok: number; changed: number; failed: number; unreachable: number; skipped: number; locked: number };
  roll?: { serial: number; batches: string[][]; failLimit: number; stoppedAfter?: number; reason?: string };
  hosts: Record<
    string,
    {
      status: 'ok' | 'changed' | 'failed' | 'unreachable' | 'skipped' | 'locked';
      /** What this run did about an unfinished earlier run found on the node. */
      recovered?: string;
      /** Who holds the node's lock, when this run could not take it. */
      lockedBy?: string;
      rollback?: { ok: boolean; detail: string };
      impl?: { wanted: 'nginx' | 'kube-lb' | 'auto'; impl: 'nginx' | 'kube-lb'; why?: string; running?: string };
      config: 'new' | 'previous' | 'unknown';
      batch?: number;
      changed: number;
      failed: number;
      steps: { name: string; status: string; summary: string; error?: string }[];
      error?: string;
      verified?: { state: string; status: number; backend?: string };
      ssh: SshCounts;
    }
  >;
}

/** `k8s-ha deploy --json` and its parsed report. */
export async function deployJson(args: string[], env?: NodeJS.ProcessEnv): Promise<CliResult & { report: DeployJson }> {
  const r = await k8sha(['deploy', '--json', ...args], { env });
  let report: DeployJson;
  try {
    report = JSON.parse(r.stdout);
  } catch {
    throw new Error(`deploy printed no JSON (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
  }
  return { ...r, report };
}

/** A copy of the lab inventory with a change applied, in the lab directory. */
export function inventoryVariant(name: string, change: (inv: Record<string, any>) => void): string {
  const inv = YAML.parse(fs.readFileSync(lab().inventory, 'utf8'));
  change(inv);
  const file = path.join(scratchDir(), `inventory.${name}.yaml`);
  fs.writeFileSync(file, YAML.stringify(inv));
  return file;
}

export interface ServiceState {
  active: string;
  sub: string;
  since: string;
  pid: string;
  configSha: string;
  staged: string;
}

/** What an operator would look at on a node: systemd's view and the live files. */
export async function serviceState(node: { name: string; address: string }): Promise<ServiceState> {
  return withNode(node, async (c) => {
    const out = await c.execOk(
      'systemctl show -p ActiveState -p SubState -p ActiveEnterTimestamp -p MainPID kube-nginx; ' +
        'echo "ConfigSha=$(sha256sum /opt/k8s/kube-nginx/conf/kube-nginx.conf 2>/dev/null | cut -d" " -f1)"; ' +
        'echo "Staged=$(find /opt/k8s/kube-nginx /etc/systemd/system -name "*.k8s-ha-new*" 2>/dev/null | wc -l)"',
    );
    const kv = Object.fromEntries(out.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
    const v = (k: string) => kv[k] ?? '';
    return { active: v('ActiveState'), sub: v('SubState'), since: v('ActiveEnterTimestamp'), pid: v('MainPID'), configSha: v('ConfigSha'), staged: v('Staged') };
  });
}

/**
 * Deploy while every node's local port is asked for /version every 20 ms: the deploy, and what each
 * node served (its longest time between two answers, and the requests it left unanswered).
 */
export async function deployWatchingGaps(args: string[]): Promise<{ d: CliResult & { report: DeployJson }; gaps: ServedReport[] }> {
  const conns = await Promise.all(lab().nodes.map((n) => SshConnection.open(nodeTarget(n))));
  try {
    const watchers = conns.map((c) => watchNodePort(() => c.connectFromHost('127.0.0.1', 8443), { ca: lab().caPem, servername: 'kubernetes' }));
    await new Promise((r) => setTimeout(r, 300));
    const d = await deployJson(args);
    await new Promise((r) => setTimeout(r, 300));
    const gaps = await Promise.all(watchers.map((w) => w.stop()));
    return { d, gaps };
  } finally {
    for (const c of conns) c.close();
  }
}

/** One line for the test log: what a node served during a switch. */
export function describeServed(what: string, node: string, g: ServedReport): string {
  const failed = g.failures.length ? `: ${g.failures.slice(0, 3).map((f) => `sent at ${f.sentMs} ms, failed at ${f.failedMs} ms: ${f.error}`).join('; ')}${g.failures.length > 3 ? '; ...' : ''}` : '';
  return (
    `${what} on ${node}: longest gap between answers ${g.longestGapMs} ms (${g.longestGapFromMs} to ${g.longestGapToMs} ms), ` +
    `${g.answered} of ${g.sent} requests answered, ${g.failures.length} unanswered${failed}`
  );
}

/**
 * A switch as docs/kube-lb.md promises it, on one node: the port never went more than `boundMs` without
 * an answer, and every request that failed (the watcher's, and the other traffic's) did so within
 * one stretch of at most `boundMs`.
 */
export function expectOneShortGap(what: string, node: string, g: ServedReport, boundMs: number, load?: LoadReport): void {
  const others = (load?.failures ?? []).map((f) => Date.parse(f.slice(0, f.indexOf(' '))) - g.startedAt);
  const window = failureWindow(g, others);
  const line =
    describeServed(what, node, g) +
    (window ? `; every failure within ${window.fromMs} to ${window.toMs} ms (${window.ms} ms)` : '') +
    (load ? `; other traffic: ${load.requests} requests, ${load.failures.length} failed` : '');
  console.log(line);
  // Requests kept going all through the deploy: one every 20 ms when this machine keeps up, fewer on a
  // busy one (a deploy beside three watchers and the load on 2 cores): at least one per 250 ms, so a
  // gap longer than the bound shows. That the answers came is the gap's bound, below.
  expect(g.sent, line).toBeGreaterThanOrEqual(Math.floor(g.stoppedMs / 250));
  expect(g.longestGapMs, line).toBeLessThanOrEqual(boundMs);
  expect(window?.ms ?? 0, line).toBeLessThanOrEqual(boundMs);
}
