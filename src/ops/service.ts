/**
 * A systemd service, enabled and running; notified handlers become daemon-reload, restart or
 * reload here. With `replaces`, the service takes over the listen port from another unit (the
 * other balancer implementation): the port changes hands in one command with the shortest gap
 * either side allows, and the old unit is disabled only once the new one is verified.
 */
import { z } from 'zod';
import { noop, type Change, type Operation, type PlanContext, type StepPlan } from './types.js';
import type { HostFacts } from '../facts/host.js';
import { inUnitCgroup, isServing } from '../facts/host.js';
import { quote } from '../util/quote.js';
import { hostPortOf, parseHostPort } from '../util/hostport.js';
import { nodePath } from '../inventory/schema.js';

/** A playbook's ADDRESS:PORT argument. */
export const addressPort = z.string().refine((v) => parseHostPort(v) !== undefined, 'must be ADDRESS:PORT');

/** A systemd unit's name as playbooks give it: what systemd allows, never starting with `-` (an option to systemctl). */
export const unitName = z
  .string()
  .max(256)
  .regex(/^[A-Za-z0-9@._:][A-Za-z0-9@._:-]*$/, 'must be a unit name like kube-nginx (letters, digits, @ . _ : -, not starting with -)');

const unitReplaced = z.strictObject({
  unit: unitName,
  /** The address both units listen on. */
  listen: addressPort,
  /**
   * start-first: start the new unit, then stop the old; the new one must wait for the port
   * (kube-lb does, for listenWait). stop-first: stop the old, wait until the port is free, start
   * the new (nginx gives up on a busy port after a few 500 ms retries).
   */
  order: z.enum(['start-first', 'stop-first']),
  /** start-first: the new unit is ready to take the port once this ADDRESS:PORT listens (up to 10 s). */
  ready: addressPort.optional(),
});

/**
 * A static pod (lb.impl static-pod): its manifest is moved aside (out of kubelet's folder, so kubelet
 * stops the pod), the unit starts once the port is free, and the manifest is removed only once the
 * unit is verified; a rollback moves it back and kubelet starts the pod again.
 */
const podReplaced = z.strictObject({
  manifest: nodePath('/etc/kubernetes/manifests/kube-nginx.yaml'),
  aside: nodePath('/etc/kubernetes/manifests/.kube-nginx.yaml.k8s-ha-aside'),
  listen: addressPort,
  /** The unit that runs static pods, watched after a rollback. */
  kubelet: unitName.default('kubelet'),
});

const replacesArgs = z.union([unitReplaced, podReplaced]);

type Replaces = z.infer<typeof replacesArgs>;
type ServiceArgs = { name: string; enabled: boolean; state: 'running' | 'stopped'; noBlock: boolean; binaryUpgrade?: { pidFile: string }; replaces?: Replaces | Replaces[] };

const listOf = (r: ServiceArgs['replaces']): Replaces[] => (r === undefined ? [] : Array.isArray(r) ? r : [r]);

/**
 * Of the units this service may take over from (the other balancers), the one to take over from on
 * this host: the one serving, else one enabled at boot, else none.
 */
export function replacedOn(
  a: Pick<ServiceArgs, 'replaces'>,
  units: Record<string, { activeState: string; unitFileState: string } | undefined>,
  files: Record<string, unknown> = {},
): Replaces | undefined {
  const list = listOf(a.replaces);
  // A static pod serves while its manifest is in kubelet's folder.
  const serving = (r: Replaces) => ('manifest' in r ? !!files[r.manifest] : isServing(units[r.unit] as never));
  return list.find(serving) ?? list.find((r) => 'unit' in r && units[r.unit]?.unitFileState === 'enabled');
}

function listening(listen: string): string {
  const { port } = hostPortOf(listen);
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  return `grep -Eq ':${hex} 0+:0000 0A' /proc/net/tcp /proc/net/tcp6 2>/dev/null`;
}

// 500 polls of about 10 ms each (a grep and a sleep): 5 to 10 s, depending on how fast the host forks.
const POLLS = 500;

/** Shell: wait (5 to 10 s at most) until nothing listens on this TCP port, read from /proc/net/tcp{,6}. */
export function waitPortFree(listen: string): string {
  return `for i in $(seq 1 ${POLLS}); do ${listening(listen)} || break; sleep 0.01; done`;
}

/** Shell: as waitPortFree, then fails, with a message, if something still listens. */
export function waitPortFreed(listen: string, who: string): string {
  return `${waitPortFree(listen)}; if ${listening(listen)}; then echo ${quote(`${who} still listens on ${listen}: the port was not let go of`)} >&2; false; fi`;
}

/** Shell: wait (5 to 10 s at most) until something listens on this TCP port; fails, with a message, if nothing does. */
export function waitPortListening(listen: string, who: string): string {
  return (
    `ok=0; for i in $(seq 1 ${POLLS}); do if ${listening(listen)}; then ok=1; break; fi; sleep 0.01; done; ` +
    `[ $ok = 1 ] || { echo ${quote(`${who} did not become ready: nothing listens on ${listen}`)} >&2; false; }`
  );
}

/** Shell: true when the process whose PID is in $1 is one of the unit's (in its cgroup): never signal a PID a stale file names. */
const ofUnit = (unit: string) => `ours() { [ -n "$1" ] && ${inUnitCgroup(unit, '$1')}; }`;

/**
 * Shell: nginx's binary upgrade, up to the point where both masters run. USR2 makes the running
 * master (in pidFile) rename that file to .oldbin and start the new binary, which inherits the
 * listening sockets and writes pidFile; then WINCH makes the old master's workers stop accepting
 * and finish their connections (as after a reload, at worker_shutdown_timeout at most). Fails,
 * saying why, when there is no running master of the unit or no new one within 10 s. A .oldbin
 * left by a master that is gone (killed, a reboot) is removed, not taken for an upgrade under way.
 */
export function upgradeInPlace(pidFile: string, unit: string): string {
  const pf = quote(pidFile);
  const ob = quote(`${pidFile}.oldbin`);
  return [
    ofUnit(unit),
    `if [ -e ${ob} ]; then o=$(cat ${ob} 2>/dev/null); if ours "$o"; then echo "an upgrade is already under way: the old master $o" ${quote(`(${pidFile}.oldbin) still runs`)} >&2; exit 1; fi; rm -f ${ob}; fi`,
    `old=$(cat ${pf} 2>/dev/null); ours "$old" || { echo ${quote(`no running master of ${unit} in ${pidFile}`)} >&2; exit 1; }`,
    'kill -USR2 "$old"',
    `new=; for i in $(seq 1 1000); do n=$(cat ${pf} 2>/dev/null); if [ -n "$n" ] && [ "$n" != "$old" ] && kill -0 "$n" 2>/dev/null; then new=$n; break; fi; sleep 0.01; done`,
    `[ -n "$new" ] || { echo "the new binary did not start a master within 10 s (its error log says why)" >&2; exit 1; }`,
    'kill -WINCH "$old"',
    'echo "upgraded in place: master $old -> $new"',
  ].join('; ');
}

/**
 * Shell: nginx's own rollback of an upgrade not verified: the old master starts workers again (HUP),
 * the new master leaves (QUIT), and the old master takes pidFile back. Without an old master of the
 * unit to go back to, a restart on the files put back.
 */
export function upgradeRollback(pidFile: string, unit: string): string {
  const pf = quote(pidFile);
  const ob = quote(`${pidFile}.oldbin`);
  return (
    `${ofUnit(unit)}; old=$(cat ${ob} 2>/dev/null); ` +
    `if ours "$old"; then new=$(cat ${pf} 2>/dev/null); kill -HUP "$old"; ` +
    `if [ "$new" != "$old" ] && ours "$new"; then kill -QUIT "$new"; fi; ` +
    `for i in $(seq 1 1500); do [ -e ${ob} ] || break; sleep 0.01; done; ` +
    `[ ! -e ${ob} ] || { echo ${quote(`the new master has not left after 15 s: ${pidFile}.oldbin is still there`)} >&2; exit 1; }; ` +
    `else rm -f ${ob}; systemctl restart ${quote(unit)}; fi`
  );
}

/** Shell: the upgrade verified, the old master leaves (its workers already finishing); systemd follows pidFile to the new one. */
export function retireOldMaster(pidFile: string, unit: string): string {
  const ob = quote(`${pidFile}.oldbin`);
  return `${ofUnit(unit)}; o=$(cat ${ob} 2>/dev/null); if ours "$o"; then kill -QUIT "$o"; else rm -f ${ob}; fi`;
}

/** The service takes the port from a static pod: its manifest moved aside, the port free, the unit started. */
function planFromPod(a: ServiceArgs, r: z.infer<typeof podReplaced>, facts: HostFacts, ctx: PlanContext): StepPlan {
  const unit = quote(a.name);
  const u = facts.units[a.name];
  const changes: Change[] = [];
  if (ctx.notified.has('daemon-reload')) changes.push({ kind: 'run', command: 'systemctl daemon-reload', label: 'daemon-reload' });
  const m = quote(r.manifest);
  const aside = quote(r.aside);
  const wasEnabled = u?.unitFileState === 'enabled';
  // Enabled with the switch, not once verified: once the manifest is aside, nothing else would start at boot.
  const enable = a.enabled && !wasEnabled ? `systemctl enable -q --no-reload ${unit} && ` : '';
  changes.push({
    kind: 'run',
    command: `mv -fT ${m} ${aside} && ${enable}{ ${waitPortFree(r.listen)}; systemctl restart ${unit}; }`,
    label: 'switch from the static pod',
    switchFrom: r.kubelet,
    // The unit lets go of the port, then the manifest goes back into kubelet's folder, and kubelet starts the pod again.
    undo:
      `systemctl stop ${unit}; ${wasEnabled ? '' : `systemctl disable -q --no-reload ${unit}; `}${waitPortFree(r.listen)}; ` +
      `if [ -e ${aside} ]; then mv -fT ${aside} ${m}; fi; ${waitPortListening(r.listen, 'the static pod')}`,
  });
  changes.push({ kind: 'run', command: `rm -f ${aside}`, label: 'remove the static pod manifest', when: 'verified' });
  return { changes, notify: [], summary: changes.map((c) => (c.kind === 'run' ? c.label : '')).join(', ') };
}

export const service: Operation<ServiceArgs> = {
  type: 'service',
  args: z.strictObject({
    name: unitName,
    enabled: z.boolean().default(true),
    state: z.enum(['running', 'stopped']).default('running'),
    /**
     * Start and restart with --no-block: for a unit whose start lasts until it is ready to serve
     * (kube-lb: until it holds its port). verify then waits for active (running), and says what it
     * waits for (another process on the port) rather than systemctl failing after the unit's timeout.
     */
    noBlock: z.boolean().default(false),
    /**
     * nginx's in-place binary upgrade, for an `upgrade` notified without a `restart`: the running
     * master (named in pidFile) starts the new binary on the listening socket it holds, its own
     * workers finish gracefully, and it leaves once the new one is verified. No connection is refused.
     */
    binaryUpgrade: z.strictObject({ pidFile: nodePath('/opt/k8s/kube-nginx/logs/kube-nginx.pid') }).optional(),
    // One unit, or several (each balancer can replace either of the others).
    replaces: z.union([replacesArgs, z.array(replacesArgs).min(1)]).optional(),
  }),
  facts: (a) => ({
    units: [a.name, ...listOf(a.replaces).flatMap((r) => ('unit' in r ? [r.unit] : []))],
    files: listOf(a.replaces).flatMap((r) => ('manifest' in r ? [r.manifest] : [])),
  }),
  plan(args, facts, ctx) {
    const picked = replacedOn(args, facts.units, facts.files);
    if (picked && 'manifest' in picked) return planFromPod(args, picked, facts, ctx);
    const a = { ...args, replaces: picked };
    const u = facts.units[a.name];
    const unit = quote(a.name);
    const changes: Change[] = [];
    const old = a.replaces && a.state === 'running' ? facts.units[a.replaces.unit] : undefined;
    const oldUnit = a.replaces ? quote(a.replaces.unit) : '';
    const oldServing = isServing(old);
    // A unit systemd has never loaded needs no daemon-reload to start: systemd >= 248 reads new unit
    // files on demand. One that fails that way (older systemd, or a unit cache with a stale mtime)
    // falls back to daemon-reload and a second try. A changed unit always gets daemon-reload.
    const brandNew = u?.loadState === 'not-found' && a.state === 'running';
    // Switching needs the unit loaded before the quick hand-over: no fallback inside it.
    if (ctx.notified.has('daemon-reload') && (!brandNew || oldServing)) changes.push({ kind: 'run', command: 'systemctl daemon-reload', label: 'daemon-reload' });
    // Taking over from another unit: which one starts at boot changes only once the new one is
    // verified (enable it and disable the old one together then), so an interrupted switch never
    // leaves both enabled to race for the port after a reboot.
    const replacing = !!a.replaces && a.state === 'running' && !!old && (old.unitFileState === 'enabled' || oldServing);
    // --no-reload: enabling only makes the boot-time symlinks; without it systemctl does a second full daemon-reload.
    const enable = a.enabled && u?.unitFileState !== 'enabled' ? `systemctl enable -q --no-reload ${unit}` : undefined;
    if (enable && !replacing) changes.push({ kind: 'run', command: enable, label: 'enable' });
    if (!a.enabled && u?.unitFileState === 'enabled') changes.push({ kind: 'run', command: `systemctl disable -q --no-reload ${unit}`, label: 'disable' });
    const active = u?.activeState === 'active';
    if (a.state === 'running' && oldServing && a.replaces) {
      const r = a.replaces;
      const command =
        r.order === 'start-first'
          ? // The old unit is stopped only once the new one is ready: if it never is, the commit fails with the old one still serving.
            // --no-block: the new unit's start ends only once it holds the port (kube-lb's ExecStartPost),
            // which it cannot while the old one serves; verify waits for it to be active (running).
            `systemctl restart --no-block ${unit} && { ${r.ready ? `${waitPortListening(r.ready, a.name)} && ` : ''}systemctl stop ${oldUnit}; }`
          : `systemctl stop --no-block ${oldUnit}; ${waitPortFree(r.listen)}; systemctl restart ${unit}`;
      changes.push({
        kind: 'run',
        command,
        label: `switch from ${r.unit}`,
        switchFrom: r.unit,
        // The new unit lets go of the port at once (--no-block: not waiting for its drain). The old one may
        // still be serving (the switch failed before stopping it): then it is left alone. It comes back at
        // boot as before, even if the disable after verify ran.
        undo:
          `systemctl stop --no-block ${unit}; systemctl disable -q --no-reload ${unit}; ` +
          (old?.unitFileState === 'enabled' ? `systemctl enable -q --no-reload ${oldUnit}; ` : '') +
          `systemctl is-active -q ${oldUnit} || { ${waitPortFree(r.listen)}; systemctl start ${oldUnit}; }`,
      });
    } else if (a.state === 'running') {
      // restart (not start) also recovers a unit that is failed or stuck activating.
      const restart = `systemctl restart ${a.noBlock ? '--no-block ' : ''}${unit}`;
      if (brandNew) changes.push({ kind: 'run', command: `${restart} 2>/dev/null || { systemctl daemon-reload && ${restart}; }`, label: 'start', unit: a.name });
      else if (!active) changes.push({ kind: 'run', command: restart, label: 'start', unit: a.name });
      else if (ctx.notified.has('restart') || (ctx.notified.has('upgrade') && !a.binaryUpgrade)) changes.push({ kind: 'run', command: restart, label: 'restart', unit: a.name });
      else if (ctx.notified.has('upgrade')) {
        // The new master reads the config at its start: a config changed in the same run needs no reload.
        const pf = a.binaryUpgrade!.pidFile;
        changes.push({ kind: 'run', command: upgradeInPlace(pf, a.name), label: 'upgrade in place', unit: a.name, undo: upgradeRollback(pf, a.name) });
        changes.push({ kind: 'run', command: retireOldMaster(pf, a.name), label: 'retire the old master', when: 'verified' });
      }
      else if (ctx.notified.has('reload')) changes.push({ kind: 'run', command: `systemctl reload ${unit}`, label: 'reload', unit: a.name });
    } else if (active) {
      changes.push({ kind: 'run', command: `systemctl stop ${unit}`, label: 'stop' });
    }
    // The replaced unit stays enabled (and restartable by a rollback) until the new one is verified.
    if (replacing) {
      if (enable) changes.push({ kind: 'run', command: enable, label: 'enable', when: 'verified' });
      changes.push({ kind: 'run', command: `systemctl disable -q --no-reload ${oldUnit}`, label: `disable ${a.replaces!.unit}`, when: 'verified' });
    }
    if (!changes.length) return noop(`${a.name} ${a.state}${a.enabled ? ', enabled' : ''}`);
    return { changes, notify: [], summary: changes.map((c) => (c.kind === 'run' ? c.label : '')).join(', ') };
  },
};
