/**
 * `lab up`, `lab prepare`, `lab down` and `lab status` as lists of steps. The
 * CLI renders the steps; this module does the work and says what changed.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { EnvironmentError, UsageError } from '../errors.js';
import { displayPath } from '../util/paths.js';
import { mapLimit } from '../util/pool.js';
import { COMPOSE_LAB } from './compose.js';
import { docker, LAB_DIR_LABEL, LAB_LABEL, LAB_ROLE_LABEL, labContainers, networkExists, networkHasIpv6, networkLabel, usedSubnets } from './docker.js';
import { ensureEngine, ensureHostLimits, type Say } from './engine.js';
import { ensureLabFiles, labBastion, labPaths, type LabPaths } from './files.js';
import { SshConnection } from '../connect/ssh.js';
import { probeMirror, waitForMaster, waitForNode, type HostHealth } from './health.js';
import { ensureImages, LAB_SUITES, SUITE, type LabSuite } from './images.js';
import { ensureKubectl } from './kubectl.js';
import { applyNodeIsolation } from './isolation.js';
// Tests isolate and reconnect the nodes of a live lab with it (a fault, like `lab master NAME down`).
export { setNodeIsolation } from './isolation.js';
import { ensureNginxTarball } from './sources.js';
import {
  checkLabDir,
  checkSize,
  hostRoutes,
  LAB_FILES,
  labId,
  pickSubnet,
  planOfState,
  readState,
  STATE_KIND,
  writeState,
  type LabState,
} from './state.js';
import { applyPartition } from './partition.js';
import { dockerRunArgs, nodeOs, parseSubnet16, planLab, RUNTIME_SUITE, type LabContainer, type LabImages, type LabPlan } from './topology.js';

export interface Step<C> {
  title: string;
  run: (ctx: C, say: Say) => Promise<string | void>;
}

export interface LabUpOptions {
  dir: string;
  /** Default: the existing lab's size, else 3. */
  nodes?: number;
  masters?: number;
  subnet?: string;
  /** `lab prepare`: images and files only, no network or containers. */
  prepareOnly?: boolean;
  /** Add a bastion and, unless keepDirect, make the nodes reachable only through it. Default: what the lab in dir has. */
  bastion?: boolean;
  /** With a bastion: the nodes stay reachable directly too. */
  keepDirect?: boolean;
  /** The nodes' Debian releases, in turn. Default: what the lab in dir has, else every node on the default release. */
  os?: string[];
  /** How many nodes (node-1 up) get podman, docker and the kubelet stand-in. Default: what the lab in dir has, else none. */
  runtime?: number;
  /** The masters' Debian release. Default: what the lab in dir has, else the default release. */
  mastersOs?: string;
}

const DEFAULT_SIZE = 3;

export interface LabUpContext {
  options: LabUpOptions & { nodes: number; masters: number; bastion: boolean; isolated: boolean; os?: LabSuite[]; runtime: number; mastersOs?: LabSuite };
  id: string;
  existing?: LabState;
  images?: LabImages & { base: string };
  tarball?: string;
  subnet?: string;
  plan?: LabPlan;
  paths?: LabPaths;
  /** What this run changed; empty on a live lab. */
  changes: string[];
  /** Containers this run created or started: fresh network namespaces, without any route added before. */
  started?: Set<string>;
  health: HostHealth[];
}

/** Boot deadline: 90 s, plus a second for each container, which all boot on the same cores. */
const bootTimeoutMs = (containers: number) => 90_000 + 1000 * containers;
/** Hosts probed at once while they boot: every probe is CPU taken from the hosts still booting. */
const PROBES_AT_ONCE = 16;

/** Check everything a user typed before touching anything. */
export async function prepareLabUp(asked: LabUpOptions): Promise<LabUpContext> {
  if (asked.nodes !== undefined) checkSize('nodes', asked.nodes);
  if (asked.masters !== undefined) checkSize('masters', asked.masters);
  const options = asked;
  if (options.subnet !== undefined) {
    const s = parseSubnet16(options.subnet);
    if (typeof s === 'string') {
      throw new UsageError(s, { hint: 'pass a /16 such as --subnet 10.230.0.0/16, or leave --subnet out to use the first free one' });
    }
  }
  const existing = await checkLabDir(options.dir);
  if (existing && ((asked.nodes ?? existing.nodes) !== existing.nodes || (asked.masters ?? existing.masters) !== existing.masters)) {
    throw new UsageError(
      `a lab of ${existing.nodes} nodes and ${existing.masters} masters is already in ${options.dir}`,
      { hint: `run \`k8s-ha lab down --dir ${options.dir}\` first to make one of another size` },
    );
  }
  for (const os of asked.os ?? []) {
    if (!Object.hasOwn(LAB_SUITES, os)) {
      throw new UsageError(`--os ${asked.os!.join(',')}: "${os}" is not a release the lab can build`, {
        hint: `use ${Object.entries(LAB_SUITES).map(([k, v]) => `${k} (${v})`).join(' or ')}, or a list: --os bookworm,bullseye`,
      });
    }
  }
  if (asked.mastersOs !== undefined && !Object.hasOwn(LAB_SUITES, asked.mastersOs)) {
    throw new UsageError(`--masters-os ${asked.mastersOs} is not a release the lab can build`, {
      hint: `use ${Object.entries(LAB_SUITES).map(([k, v]) => `${k} (${v})`).join(' or ')}`,
    });
  }
  if (existing && asked.mastersOs !== undefined && asked.mastersOs !== (existing.mastersOs ?? SUITE)) {
    throw new UsageError(`the lab in ${options.dir} runs ${existing.mastersOs ?? SUITE} on its masters, not ${asked.mastersOs}`, {
      hint: `run \`k8s-ha lab down --dir ${options.dir}\` first to change it`,
    });
  }
  const mastersOs = (asked.mastersOs ?? existing?.mastersOs) as LabSuite | undefined;
  const os = (asked.os ?? existing?.os) as LabSuite[] | undefined;
  const runtime = asked.runtime ?? existing?.runtime ?? 0;
  if (existing && asked.runtime !== undefined && asked.runtime !== (existing.runtime ?? 0)) {
    throw new UsageError(`the lab in ${options.dir} has ${existing.runtime ?? 0} nodes with a container runtime, not ${asked.runtime}`, {
      hint: `run \`k8s-ha lab down --dir ${options.dir}\` first to change it`,
    });
  }
  const nodes = asked.nodes ?? existing?.nodes ?? DEFAULT_SIZE;
  if (runtime > nodes) {
    throw new UsageError(`--runtime ${runtime}: the lab has only ${nodes} nodes`, { hint: `pass --runtime ${nodes} (every node) or fewer` });
  }
  for (let i = 1; i <= runtime; i++) {
    const release = nodeOs(os, i);
    if (release && release !== RUNTIME_SUITE) {
      throw new UsageError(`--runtime ${runtime}: node-${i} runs ${release}, and the runtime image is built on ${RUNTIME_SUITE} only`, {
        hint: `list ${RUNTIME_SUITE} first in --os for the nodes that get a runtime, e.g. --os ${RUNTIME_SUITE},bullseye --runtime 1`,
      });
    }
  }
  if (existing && asked.os && JSON.stringify(asked.os) !== JSON.stringify(existing.os ?? [SUITE])) {
    throw new UsageError(`the lab in ${options.dir} runs ${(existing.os ?? [SUITE]).join(',')} on its nodes, not ${asked.os.join(',')}`, {
      hint: `run \`k8s-ha lab down --dir ${options.dir}\` first to change it`,
    });
  }
  if (existing && options.subnet && existing.subnet !== options.subnet) {
    throw new UsageError(`the lab in ${options.dir} uses ${existing.subnet}, not ${options.subnet}`, {
      hint: `run \`k8s-ha lab down --dir ${options.dir}\` first to move it`,
    });
  }
  if (asked.keepDirect && !asked.bastion && !existing?.bastion) {
    throw new UsageError(`--keep-direct keeps the nodes reachable beside a bastion, and ${existing ? `the lab in ${options.dir} has` : 'this lab would have'} none`, {
      hint: `add --bastion: k8s-ha lab up --dir ${options.dir} --bastion --keep-direct`,
    });
  }
  // Like the size: flags say what to have, no flags keep what the lab has. A bastion can be added to a
  // live lab (one more container); --bastion alone isolates the nodes, --keep-direct reconnects them.
  const bastion = !!(asked.bastion || existing?.bastion);
  const isolated = bastion && !asked.keepDirect && (asked.bastion ? true : !!existing?.isolated);
  const sized = {
    ...options,
    nodes,
    masters: asked.masters ?? existing?.masters ?? DEFAULT_SIZE,
    bastion,
    isolated,
    os,
    runtime,
    mastersOs,
  };
  return { options: sized, id: labId(options.dir), existing, changes: [], health: [] };
}

export function labUpSteps(): Step<LabUpContext>[] {
  return [
    {
      title: 'Docker engine',
      run: async (_ctx, say) => {
        await ensureEngine(say);
      },
    },
    {
      title: 'Lab images',
      run: async (ctx, say) => {
        let built = false;
        const images = await ensureImages((line) => {
          built = true;
          say(line);
        }, ctx.options.os, ctx.options.runtime > 0, ctx.options.mastersOs);
        ctx.images = images;
        if (built) ctx.changes.push('built images');
        const others = Object.entries(images.nodeByOs ?? {}).filter(([, tag]) => tag !== images.node).map(([os, tag]) => `${tag} (${os})`);
        return `${[images.node, ...others, ...(images.runtime ? [`${images.runtime} (runtime)`] : []), images.master, images.apiserver].join(', ')}${built ? '' : ' (cached)'}`;
      },
    },
    {
      title: 'nginx source tarball',
      run: async (ctx, say) => {
        ctx.tarball = await ensureNginxTarball(ctx.images!.base, say);
        return `${path.basename(ctx.tarball)}, sha256 verified`;
      },
    },
    {
      title: 'Lab files: SSH keys, host keys, CA and certificates, inventory, kubeconfig and kubectl',
      run: async (ctx) => {
        const o = ctx.options;
        ctx.subnet = ctx.existing?.subnet ?? o.subnet ?? (o.prepareOnly ? COMPOSE_LAB.subnet : await chooseSubnet());
        ctx.plan = planLab({
          id: ctx.id,
          nodes: o.nodes,
          masters: o.masters,
          subnet: ctx.subnet,
          dir: path.resolve(o.dir),
          images: ctx.images!,
          bastion: o.bastion,
          os: o.os,
          runtime: o.runtime,
        });
        ctx.paths = await ensureLabFiles(ctx.plan, o.dir, ctx.tarball!, { isolated: o.isolated });
        await ensureKubectl(ctx.paths.kubectl, ctx.images!.node);
        const kube = `${displayPath(ctx.paths.kubeconfig)}, ${displayPath(ctx.paths.kubectl)}`;
        return o.bastion
          ? `${displayPath(ctx.paths.inventory)}, ${displayPath(ctx.paths.bastionInventory)}, SSH host CA, ${kube}`
          : `${displayPath(ctx.paths.inventory)}, ${kube}`;
      },
    },
    {
      title: 'Network and containers',
      run: async (ctx, say) => {
        if (ctx.options.prepareOnly) return 'skipped (prepare only)';
        const plan = ctx.plan!;
        if (!ctx.existing) {
          // No state file, but containers or a network with this lab's id: left by an earlier lab in
          // this folder whose files were deleted by hand. They belong to no lab now: remove them.
          const orphans = await labContainers(plan.id);
          if (orphans.length) await docker(['rm', '-f', ...orphans.map((c) => c.id)]);
          const orphanNet = (await networkLabel(plan.network.name, LAB_LABEL)) === plan.id;
          if (orphanNet) await docker(['network', 'rm', plan.network.name]);
          if (orphans.length || orphanNet) {
            const what = `removed ${orphans.length} container${orphans.length === 1 ? '' : 's'}${orphanNet ? ' and a network' : ''} left by an earlier lab in this folder`;
            ctx.changes.push(what);
            say(what);
          }
        }
        // Masters and the bastion boot systemd like a node, and take inotify instances like one.
        await ensureHostLimits(ctx.options.nodes + ctx.options.masters + (ctx.options.bastion ? 1 : 0), (line) => {
          ctx.changes.push(line);
          say(line);
        });
        if (await networkExists(plan.network.name)) {
          if ((await networkLabel(plan.network.name, LAB_LABEL)) !== plan.id) {
            throw new UsageError(`a Docker network named ${plan.network.name} exists and is not this lab's`, {
              hint: `remove it (docker network rm ${plan.network.name}) or choose another --dir`,
            });
          }
          if (!(await networkHasIpv6(plan.network.name))) {
            // Made by a k8s-ha whose lab was IPv4 only. Docker cannot turn IPv6 on in a network that
            // exists, and a container keeps the addresses it was made with: make both again, as for
            // a newer image (what was deployed on the old containers goes with them).
            const old = await labContainers(plan.id);
            if (old.length) await docker(['rm', '-f', ...old.map((c) => c.id)]);
            await docker(['network', 'rm', plan.network.name]);
            const what = `removed the IPv4-only network ${plan.network.name} and its ${old.length} container${old.length === 1 ? '' : 's'}, to make them dual-stack`;
            ctx.changes.push(what);
            say(what);
          }
        }
        if (!(await networkExists(plan.network.name))) {
          await docker([
            'network', 'create',
            '--subnet', plan.network.subnet,
            '--gateway', plan.network.gateway,
            '--ipv6',
            '--subnet', plan.network.subnet6,
            '--gateway', plan.network.gateway6,
            '--label', `${LAB_LABEL}=${plan.id}`,
            '--label', `${LAB_DIR_LABEL}=${path.resolve(ctx.options.dir)}`,
            plan.network.name,
          ], {
            step: `creating the lab network ${plan.network.name} (${plan.network.subnet} and ${plan.network.subnet6})`,
            hint: 'the lab network is dual-stack: this machine needs IPv6 on (sysctl net.ipv6.conf.all.disable_ipv6=0, no ipv6.disable=1 at boot)',
          });
          ctx.changes.push(`created network ${plan.network.name} (${plan.network.subnet}, ${plan.network.subnet6})`);
        }
        const have = new Map((await labContainers(plan.id)).map((c) => [c.name, c]));
        const faults = ctx.existing?.faults ?? {};
        const labels = (c: LabContainer) => ({ [LAB_LABEL]: plan.id, [LAB_DIR_LABEL]: path.resolve(ctx.options.dir), [LAB_ROLE_LABEL]: c.role });
        ctx.started = new Set();
        let created = 0;
        let started = 0;
        let recreated = 0;
        // The engine serialises much of `docker run`; a dozen in flight keeps it busy on 2 cores.
        await mapLimit(plan.containers, 12, async (c) => {
          let cur = have.get(c.name);
          const outdated = !!cur && cur.image !== c.image;
          if (outdated) {
            // The lab's definition changed since this container was made: make it again.
            await docker(['rm', '-f', cur!.id]);
            cur = undefined;
          }
          if (cur?.running) return;
          // Powered off on purpose (lab.json says so): it stays off; made, not started, when missing.
          if (faults[c.service] === 'powered-off') {
            if (!cur) await docker(['create', ...dockerRunArgs(plan, c, labels(c))], { step: `making ${c.service}` });
            return;
          }
          if (cur) {
            await docker(['start', c.name]);
            ctx.started!.add(c.name);
            started++;
            return;
          }
          await docker(['run', '-d', ...dockerRunArgs(plan, c, labels(c))], { step: `starting ${c.service}` });
          ctx.started!.add(c.name);
          if (outdated) recreated++;
          else created++;
          say(`started ${c.service} (${c.address}, ${c.address6})`);
        });
        // Partitioned on purpose (lab.json says so): a master started again has lost its qdiscs.
        const partitioned = plan.containers.filter((c) => faults[c.service] === 'partitioned');
        for (const m of partitioned) {
          if (await applyPartition(m, true)) ctx.changes.push(`partitioned ${m.service} again, as lab.json records`);
        }
        if (recreated) ctx.changes.push(`recreated ${recreated} container${recreated === 1 ? '' : 's'} with a newer image`);
        if (created) ctx.changes.push(`created ${created} container${created === 1 ? '' : 's'}`);
        if (started) ctx.changes.push(`started ${started} stopped container${started === 1 ? '' : 's'}`);
        return `${plan.containers.length} containers on ${plan.network.subnet} and ${plan.network.subnet6}` + (created + recreated || started ? '' : ' (all running)');
      },
    },
    {
      title: 'Nodes reachable from this machine',
      run: async (ctx, say) => {
        if (ctx.options.prepareOnly) return 'skipped (prepare only)';
        const { isolated } = ctx.options;
        const bastion = labBastion(ctx.plan!);
        // Every run, not only the first: a node stopped and started has lost its route (see isolation.ts).
        const changed = await applyNodeIsolation(ctx.plan!, isolated, ctx.started);
        if (changed.length) {
          const what = `${isolated ? 'isolated' : 'reconnected'} ${changed.length} node${changed.length === 1 ? '' : 's'} ${isolated ? 'from' : 'to'} this machine`;
          ctx.changes.push(what);
          say(what);
        }
        if (isolated) return `no: only through the bastion (${bastion!.address})`;
        return bastion ? `yes, and through the bastion (${bastion.address})` : 'yes';
      },
    },
    {
      title: 'Hosts answer: nodes and masters boot systemd and accept SSH, masters answer /readyz, mirror serves the tarball',
      run: async (ctx) => {
        if (ctx.options.prepareOnly) return 'skipped (prepare only)';
        ctx.health = await checkLabHealth(ctx.plan!, ctx.paths!, bootTimeoutMs(ctx.plan!.containers.length), {
          throughBastion: ctx.options.isolated,
          faults: ctx.existing?.faults,
        });
        const bad = ctx.health.filter((h) => !h.ok && !h.fault);
        const faulted = ctx.health.filter((h) => h.fault);
        if (bad.length) {
          const first = ctx.plan!.containers.find((c) => c.service === bad[0]!.service)!;
          throw new EnvironmentError(
            `${bad.length} of ${ctx.health.length} lab hosts are not healthy:\n` +
              bad.map((h) => `  ${h.service} (${h.address}): ${h.detail}`).join('\n'),
            {
              hint: `look at \`docker logs ${first.name}\` and \`docker ps -a\`; \`k8s-ha lab up\` again starts what stopped, \`k8s-ha lab down\` removes it all`,
            },
          );
        }
        if (faulted.length) {
          return `${ctx.health.length - faulted.length} hosts healthy; ${faulted.map((h) => `${h.service} ${h.fault}`).join(', ')}, as lab.json records`;
        }
        return `${ctx.health.length} hosts healthy`;
      },
    },
    {
      title: 'Lab state',
      run: async (ctx) => {
        const o = ctx.options;
        const state: LabState = {
          kind: STATE_KIND,
          version: 1,
          id: ctx.id,
          dir: path.resolve(o.dir),
          nodes: o.nodes,
          masters: o.masters,
          subnet: ctx.subnet!,
          images: { node: ctx.images!.node, master: ctx.images!.master, apiserver: ctx.images!.apiserver, ...(ctx.images!.nodeByOs ? { nodeByOs: ctx.images!.nodeByOs } : {}), ...(ctx.images!.runtime ? { runtime: ctx.images!.runtime } : {}) },
          createdAt: ctx.existing?.createdAt ?? new Date().toISOString(),
          bastion: o.bastion,
          isolated: o.isolated,
          ...(o.os ? { os: o.os } : {}),
          ...(o.mastersOs ? { mastersOs: o.mastersOs } : {}),
          ...(o.runtime ? { runtime: o.runtime } : {}),
          ...(ctx.existing?.faults ? { faults: ctx.existing.faults } : {}),
        };
        if (!o.prepareOnly) await writeState(o.dir, state);
        return o.prepareOnly ? 'not written (prepare only)' : path.join(o.dir, 'lab.json');
      },
    },
  ];
}

async function chooseSubnet(): Promise<string> {
  const used = [...(await usedSubnets()), ...hostRoutes()];
  const free = pickSubnet(used);
  if (!free) {
    throw new UsageError('no free /16 for the lab network among 10.210.0.0/16 to 10.249.0.0/16', {
      hint: 'pass --subnet A.B.0.0/16, or remove old lab networks (k8s-ha lab down)',
    });
  }
  return free;
}

export interface HealthOptions {
  /**
   * The nodes do not answer this machine: log in to them through the bastion, as a deploy would.
   * (Not `docker exec`: that would say nothing of the path a user's deploy takes.)
   */
  throughBastion?: boolean;
  /** Masters partitioned or powered off on purpose (lab.json): not probed, reported as such. */
  faults?: LabState['faults'];
}

/** Every lab host, probed the way a user would: SSH + systemd (and TLS /readyz on masters), HTTP HEAD. */
export async function checkLabHealth(plan: LabPlan, paths: LabPaths, timeoutMs: number, options: HealthOptions = {}): Promise<HostHealth[]> {
  const caPem = await fsp.readFile(paths.caFile, 'utf8');
  // One deadline for all, from now: a host probed late in the pool does not get less time for its turn.
  const deadline = Date.now() + timeoutMs;
  const bastion = labBastion(plan);
  if (options.throughBastion && !bastion) throw new Error('checkLabHealth: throughBastion on a lab without a bastion');
  const through = options.throughBastion ? bastion : undefined;
  const probe = (c: LabPlan['containers'][number], left: number) =>
    c.role === 'node'
      ? waitForNode(c, paths, left, through)
      : c.role === 'bastion'
        ? waitForNode(c, paths, left)
        : c.role === 'master'
          ? waitForMaster(c, paths, caPem, left)
          : probeMirror(c, left);
  let health: HostHealth[];
  const faulted = (c: LabPlan['containers'][number]): HostHealth | undefined => {
    const fault = options.faults?.[c.service];
    if (!fault) return undefined;
    const undo = fault === 'partitioned' ? 'heal' : 'power-on';
    return { service: c.service, role: c.role, address: c.address, ok: false, fault, detail: `${fault} (k8s-ha lab master ${c.service} ${undo})` };
  };
  try {
    health = await mapLimit(plan.containers, PROBES_AT_ONCE, async (c) => faulted(c) ?? probe(c, Math.max(Math.min(timeoutMs, 1000), deadline - Date.now())));
    // A second chance, once: a host whose sshd never accepted a login (seen on heavily loaded machines) gets
    // its sshd restarted and is probed again for a minute. Anything else stays as it was found.
    if (timeoutMs < 10_000) return health;
    return await Promise.all(
      health.map(async (h, i) => {
        const c = plan.containers[i]!;
        if (h.ok || h.fault || c.role === 'mirror' || !/no SSH login/.test(h.detail)) return h;
        await docker(['exec', c.name, 'systemctl', 'restart', 'ssh']).catch(() => undefined);
        const next = await probe(c, 60_000);
        if (next.ok) return { ...next, detail: `${next.detail} (after restarting its sshd once)` };
        if (!/no SSH login/.test(next.detail)) return next;
        // Last, once: the whole container (a boot that wedged before sshd). A restarted node has lost
        // the route that keeps it from this machine: put it back before probing through the bastion.
        await docker(['restart', '-t', '1', c.name]).catch(() => undefined);
        if (through && c.role === 'node') await applyNodeIsolation({ ...plan, containers: [c] }, true).catch(() => undefined);
        const last = await probe(c, 60_000);
        return last.ok ? { ...last, detail: `${last.detail} (after restarting its sshd, then its container, once)` } : last;
      }),
    );
  } finally {
    SshConnection.closeIdleBastions();
  }
}

// --- down -----------------------------------------------------------------

export interface LabDownResult {
  id: string;
  containers: string[];
  network: boolean;
  files: boolean;
}

/** Remove exactly what the lab created: its containers, its network, its files. Images stay (a cache). */
export async function labDown(dir: string): Promise<LabDownResult> {
  const state = await checkLabDir(dir);
  const id = state?.id ?? labId(dir);
  const result: LabDownResult = { id, containers: [], network: false, files: false };
  await ensureEngine(() => undefined).catch(() => undefined);
  const containers = await labContainers(id).catch(() => []);
  if (containers.length) {
    await docker(['rm', '-f', '-v', ...containers.map((c) => c.id)]);
    result.containers = containers.map((c) => c.name);
  }
  if ((await networkLabel(id, LAB_LABEL).catch(() => undefined)) === id) {
    await docker(['network', 'rm', id]);
    result.network = true;
  }
  for (const f of LAB_FILES) {
    const p = path.join(dir, f);
    if (await fsp.stat(p).catch(() => undefined)) {
      await fsp.rm(p, { recursive: true, force: true });
      result.files = true;
    }
  }
  if ((await fsp.readdir(dir).catch(() => ['x'])).length === 0) await fsp.rmdir(dir);
  return result;
}

// --- status ---------------------------------------------------------------

export interface LabStatus {
  state: LabState;
  paths: LabPaths;
  hosts: (HostHealth & { container: string; address6: string })[];
  bastion?: { name: string; address: string };
  /** The nodes are reachable only through the bastion (as lab.json records). */
  isolated: boolean;
}

export async function labStatus(dir: string): Promise<LabStatus> {
  const state = await readState(dir);
  if (!state) throw new UsageError(`no lab in ${dir}`, { hint: `start one with \`k8s-ha lab up --dir ${dir}\`` });
  const paths = labPaths(dir);
  const plan = planOfState(state, dir);
  const containers = new Map((await labContainers(state.id)).map((c) => [c.name, c]));
  const isolated = !!state.bastion && !!state.isolated;
  const health = await checkLabHealth(plan, paths, 1, { throughBastion: isolated, faults: state.faults });
  const bastion = labBastion(plan);
  return {
    state,
    paths,
    ...(bastion ? { bastion: { name: bastion.service, address: bastion.address } } : {}),
    isolated,
    hosts: plan.containers.map((c, i) => {
      const ctr = containers.get(c.name);
      const h = health[i]!;
      const container = ctr ? ctr.status : 'missing';
      return { ...h, address6: c.address6, ok: h.ok && !!ctr?.running, detail: ctr?.running || h.fault ? h.detail : '', container };
    }),
  };
}
