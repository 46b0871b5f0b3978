/**
 * What a deploy (or status) works from, before any node is touched: the inventory and playbooks
 * loaded and checked, the nodes selected, how to reach each, and the builds the nodes install.
 * Which balancer a node on `lb.impl: auto` gets is decided once, by the pure `chooseImpl`.
 */
import { takeMastersFromCluster, type MastersChange } from '../cluster/read.js';
import { deadlineOf, deadlinesOf, secondsOf } from '../connect/deadlines.js';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { userNameProblem } from '../util/safe-values.js';
import { BuildError, ConnectError, NoToolchainError, UsageError, type K8sHaError } from '../errors.js';
import { cachedKubeLb, controllerArch, ensureKubeLb, type KubeLbArch } from '../build/kube-lb.js';
import { builtFor, cachedNginxBinary, cachedNginxBuilds, cannotRun, controllerBuildHost, controllerOs, ensureNginxBinary, withStatusModule, type BuildHost, type BuiltBinary } from '../build/nginx.js';
import { emptyRequest, factScript, isServing, parseFacts, type HostFacts } from '../facts/host.js';
import { expandHome, readRevokedKeys, SshConnection, type SshTarget } from '../connect/ssh.js';
import { TargetResolver } from '../connect/targets.js';
import { loadInventory, type LoadedInventory } from '../inventory/load.js';
import { identityFileProblem } from '../inventory/local-files.js';
import { buildHostNames, imageRepository, parseStore, vipHosts as allVipHosts, wantedImpl, type Impl, type Inventory, type InventoryNode, type VipHost } from '../inventory/schema.js';
import { IMAGE_ARTIFACT, IMPL_UNITS, TEMPLATES } from '../lb/templates.js';
import { nginxImage } from '../build/image.js';
import { storeProblem, type Store } from '../build/store.js';
import { localFs, SftpFs } from '../build/store-fs.js';
import type { Runtime } from '../lb/container.js';
import { clientPem } from '../lb/client-cert.js';
import type { PlanContext } from '../ops/types.js';
import { defaultPlaybookPath, IMPL_PLAYBOOKS, loadPlaybook, VIP_PLAYBOOK, type Playbook, type PlaybookStep } from './playbook.js';
import { VIP_TEMPLATES } from '../lb/vip.js';
import { selectedVipHosts } from './vip.js';
import type { Serial } from './roll.js';

export interface DeployOptions {
  inventoryFile: string;
  playbookFile?: string;
  limit?: string[];
  /** At most this many SSH sessions, uploads and verify probes at any moment. */
  concurrency: number;
  acceptNewHostKeys: boolean;
  /** --check: plan only; nothing is built, installed or written anywhere. */
  check?: boolean;
  /** --diff: read the current text of rendered files, to show unified diffs. */
  diff?: boolean;
  /** --serial: nodes per batch when a running service would be restarted or reloaded. */
  serial?: Serial;
  /** --max-fail-percent: failed nodes a roll tolerates before it stops. */
  maxFailPercent?: number;
  /** --repoint-kubeconfigs: point kubelet and kube-proxy at the local balancer once it is verified. */
  repointKubeconfigs?: boolean;
  /** --verify-timeout: how long verify waits for an apiserver to answer through the local port. */
  verifyTimeoutMs?: number;
  /** --repoint-timeout: how long each restarted kubelet or kube-proxy has to run and connect through it. */
  repointTimeoutMs?: number;
  /** --wait-lock: how long to wait for a node another run holds (0: report it locked at once). */
  waitLockMs?: number;
  /** --masters-from-cluster: the master list from the cluster's kubernetes Service, not the inventory. */
  mastersFromCluster?: boolean;
  /** --kubeconfig: the credentials to ask the cluster with, instead of the inventory's cluster.kubeconfig. */
  kubeconfig?: string;
  /** --min-masters: the fewest apiservers --masters-from-cluster may leave nodes with (default: a majority of the inventory's). */
  minMasters?: number;
  /** -u: the login name, in place of the inventory's ssh.user (a host's own ssh.user still wins). */
  sshUser?: string;
  /** --private-key: the key to log in with, in place of the inventory's ssh.identityFile (a host's own still wins). */
  identityFile?: string;
}

/**
 * -u and --private-key: what the inventory's `ssh:` says for every host, given on the command line
 * instead (as `ssh -l` and `ssh -i` are), checked as the inventory's would be, before any connection.
 * A host's own `ssh:` in the inventory still wins: it names that host alone.
 */
async function withSshFlags(inv: Inventory, options: DeployOptions): Promise<Inventory> {
  if (options.sshUser === undefined && options.identityFile === undefined) return inv;
  const ssh = { ...inv.ssh };
  if (options.sshUser !== undefined) {
    const problem = userNameProblem(options.sshUser);
    if (problem) throw new UsageError(`-u ${problem}`, { hint: 'give the login name k8s-ha should use on every host, e.g. -u ops' });
    ssh.user = options.sshUser;
  }
  if (options.identityFile !== undefined) {
    const file = path.resolve(expandHome(options.identityFile));
    const problem = await identityFileProblem(file, 'flag');
    if (problem) throw new UsageError(`--private-key: ${problem}`, { hint: 'name the private key file, e.g. --private-key ~/.ssh/ops_ed25519' });
    ssh.identityFile = file;
  }
  return { ...inv, ssh };
}

/** A balancer implementation a node runs. */
export type RunImpl = Exclude<Impl, 'auto'>;

/** The balancers that run the nginx image (k8s-ha's, or lb.image): a container under systemd, or a static pod. */
export const isImaged = (impl: Impl | undefined): impl is 'container' | 'static-pod' => impl === 'container' || impl === 'static-pod';

export interface NodeImpl {
  /** What the inventory asks for. */
  wanted: Impl;
  /** What the node gets. */
  impl: RunImpl;
  /** Why auto chose what it chose, when that is not plain nginx. */
  why?: string;
  /** The implementation serving before, when this deploy switches the node. */
  from?: RunImpl;
  /** What the node runs after the deploy: `impl`, or `from` when the switch was not applied or was undone; unknown when lost. */
  running?: RunImpl;
}

export interface Builds {
  artifacts: PlanContext['artifacts'];
  /** The nginx builds, for what they can run on: one per build host (build.host), each for its CPU architecture, the first host's first. */
  nginx?: BuiltBinary[];
  /** Why nginx could not be built this time (auto nodes then run kube-lb, unless they serve with nginx already). */
  nginxUnbuildable?: string;
  /** --check: artifacts that are not in the cache; their files are reported as unknown. */
  unknown: string[];
  summary: string;
}

export interface Setup {
  options: DeployOptions;
  loaded: LoadedInventory;
  playbooks: Record<RunImpl, Playbook>;
  nodes: InventoryNode[];
  targets: Map<string, SshTarget>;
  /** The VIP hosts this run works on (vip.hosts, or those --limit names), and their playbook. */
  vipHosts: VipHost[];
  /** How to reach every VIP host, selected or not: who holds the VIP is asked of all of them. */
  vipTargets: Map<string, SshTarget>;
  vipPlaybook?: Playbook;
  /** The inventory's warnings, then what resolving SSH settings found (a HostName not used, a Match block ignored). */
  warnings: string[];
  /** --masters-from-cluster: the master list this run took from the cluster, against the inventory's. */
  masters?: MastersChange;
  /** How to reach the build node that holds the store (build.store HOST:PATH). */
  storeTarget?: SshTarget;
  /** How to reach any host of the inventory (a VIP host leaving vip.hosts), resolved as the others were. */
  reach: (host: InventoryNode, what: string) => SshTarget;
  startedAt: number;
}

/** Every implementation's playbook; --playbook replaces the one of the same name (kube-lb, kube-haproxy), else nginx's. */
async function loadPlaybooks(inv: Inventory, file: string | undefined): Promise<Record<RunImpl, Playbook>> {
  const templates = Object.keys(TEMPLATES);
  const own = file ? await loadPlaybook(file, inv, templates) : undefined;
  const slots: Record<string, RunImpl> = { 'kube-lb': 'kube-lb', 'kube-haproxy': 'haproxy', 'kube-nginx-container': 'container', 'kube-nginx-static-pod': 'static-pod' };
  const slot: RunImpl | undefined = own ? (slots[own.name] ?? 'nginx') : undefined;
  const load = async (impl: RunImpl) => (slot === impl ? own! : loadPlaybook(defaultPlaybookPath(IMPL_PLAYBOOKS[impl]), inv, templates));
  return {
    nginx: await load('nginx'),
    'kube-lb': await load('kube-lb'),
    haproxy: await load('haproxy'),
    container: await load('container'),
    'static-pod': await load('static-pod'),
  };
}

export async function loadSetup(options: DeployOptions): Promise<Setup> {
  const startedAt = Date.now();
  const loaded = await loadInventory(options.inventoryFile);
  let masters: MastersChange | undefined;
  if (options.mastersFromCluster) {
    // Before anything reads the masters (playbooks, rules, probes): the whole run uses the cluster's list.
    const taken = await takeMastersFromCluster(loaded.inventory, { ...options, inventoryFile: options.inventoryFile });
    loaded.inventory = taken.inventory;
    masters = taken.change;
  } else if (options.kubeconfig || options.minMasters !== undefined) {
    throw new UsageError(`${options.kubeconfig ? '--kubeconfig' : '--min-masters'} is for --masters-from-cluster`, { hint: 'add --masters-from-cluster, or leave it out' });
  }
  loaded.inventory = await withSshFlags(loaded.inventory, options);
  const inv = loaded.inventory;
  checkRepointTimeout(options, inv);
  // The checks' client certificate is read and judged now (exit 2 before any connection), not per host.
  clientPem(inv);
  const playbooks = await loadPlaybooks(inv, options.playbookFile);
  let nodes = inv.nodes;
  if (options.limit?.length) {
    const vipNames = inv.vip?.hosts ?? [];
    const unknown = options.limit.filter((n) => !inv.nodes.some((x) => x.name === n) && !vipNames.includes(n));
    if (unknown.length) {
      throw new UsageError(`--limit names ${unknown.join(', ')}, not in ${options.inventoryFile}`, {
        hint: `use node names${vipNames.length ? ' or VIP hosts' : ''} from the inventory: ${[...inv.nodes.map((n) => n.name), ...vipNames.filter((n) => !inv.nodes.some((x) => x.name === n))].join(', ')}`,
      });
    }
    nodes = inv.nodes.filter((n) => options.limit!.includes(n.name));
  }
  const vipHosts = selectedVipHosts(inv, options.limit);
  const vipPlaybook = inv.vip ? await loadPlaybook(defaultPlaybookPath(VIP_PLAYBOOK), inv, Object.keys(VIP_TEMPLATES)) : undefined;
  const resolver = new TargetResolver(inv, { acceptNewHostKeys: options.acceptNewHostKeys });
  const warnings = [...loaded.warnings];
  /** How to reach a host (a node, or a VIP host); its ssh_config warnings are said once per name. */
  const reach = (host: InventoryNode, what: string): SshTarget => {
    let resolved;
    try {
      resolved = resolver.resolve(host);
    } catch (e) {
      throw new UsageError(`${options.inventoryFile}: cannot work out how to reach ${what}${host.name}: ${(e as Error).message}`, {
        hint: (e as K8sHaError).hint ?? 'check ssh.proxyJump in the inventory and ProxyJump in ~/.ssh/config',
      });
    }
    for (const w of resolved.warnings) if (!warnings.includes(w)) warnings.push(w);
    return options.check ? readOnly(resolved.target) : resolved.target;
  };
  const targets = new Map<string, SshTarget>();
  for (const n of nodes.concat(inv.nodes.filter((x) => buildHostNames(inv.build).includes(x.name) && !nodes.includes(x)))) targets.set(n.name, reach(n, ''));
  const vipTargets = new Map<string, SshTarget>();
  // A VIP host that is a node of this run is reached as that node (rules.ts: no name is both a master and a node).
  for (const h of allVipHosts(inv)) vipTargets.set(h.name, targets.get(h.name) ?? reach({ name: h.name, address: h.address, ssh: h.ssh }, 'VIP host '));
  // The build node holding the store: reached as the node of that name, else as a host of its own (ssh_config, the inventory's ssh:).
  const storeAt = inv.build.store ? parseStore(inv.build.store) : undefined;
  const storeMaster = inv.masters.find((m) => m.name === storeAt?.host);
  const storeNode: InventoryNode | undefined = storeAt?.host ? (inv.nodes.find((n) => n.name === storeAt.host) ?? (storeMaster ? { name: storeMaster.name, address: storeMaster.address, ssh: storeMaster.ssh } : { name: storeAt.host })) : undefined;
  const storeTarget = storeNode && (storeAt!.user ? reach({ ...storeNode, ssh: { ...storeNode.ssh, user: storeAt!.user } }, "build.store's host ") : (targets.get(storeNode.name) ?? reach(storeNode, "build.store's host ")));
  await checkSshFiles(options.inventoryFile, [...targets.values(), ...vipTargets.values(), ...(storeTarget ? [storeTarget] : [])]);
  return { options, loaded, playbooks, nodes, targets, vipHosts, vipTargets, vipPlaybook, warnings, ...(masters ? { masters } : {}), ...(storeTarget ? { storeTarget } : {}), reach, startedAt };
}

/**
 * The repoint script waits --repoint-timeout for each restarted service in turn, and may then put the
 * files back and restart them: all of it must fit in its deadline (timeouts.repoint), with 30 s for
 * the restarts, or the deadline would end the script mid-way and leave the node to the next run.
 */
const REPOINT_RESTARTS_MS = 30_000;
function checkRepointTimeout(options: DeployOptions, inv: Inventory): void {
  if (!options.repointKubeconfigs || options.repointTimeoutMs === undefined) return;
  const deadline = deadlineOf('repoint', deadlinesOf(inv));
  // Each service is restarted and waited for once, however many of its kubeconfigs a node has.
  const services = Math.max(1, new Set(inv.kubeconfigs.flatMap((k) => (k.service ? [k.service] : []))).size);
  if (services * options.repointTimeoutMs + REPOINT_RESTARTS_MS > deadline) {
    const most = Math.floor((deadline - REPOINT_RESTARTS_MS) / services / 1000);
    throw new UsageError(
      `--repoint-timeout ${secondsOf(options.repointTimeoutMs)} s for each of ${services} services, and the restarts, does not fit in timeouts.repoint (${secondsOf(deadline)} s) of ${options.inventoryFile}`,
      { hint: most >= 1 ? `give --repoint-timeout at most ${most}s, or raise timeouts.repoint` : 'raise timeouts.repoint' },
    );
  }
}

/**
 * ssh.identityFile of every host and bastion, as its tokens (%h, %r...) expand for it: the load
 * checked the ones without tokens; these name their file only now, still before any connection.
 * And ssh_config's RevokedHostKeys file, which must be a list of keys k8s-ha can read: one it
 * could not would revoke nothing.
 */
async function checkSshFiles(inventoryFile: string, targets: SshTarget[]): Promise<void> {
  const seen = new Set<string>();
  for (const top of targets) {
    for (let t: SshTarget | undefined = top; t; t = t.jump) {
      if (t.identityFile && !seen.has(t.identityFile)) {
        seen.add(t.identityFile);
        const problem = await identityFileProblem(t.identityFile);
        if (problem) throw new UsageError(`${inventoryFile}: ssh.identityFile of ${t.name}: ${problem}`, { hint: 'correct ssh.identityFile in the inventory' });
      }
      const revoked = t.revokedHostKeys;
      if (revoked && !seen.has(`revoked:${revoked.file}`)) {
        seen.add(`revoked:${revoked.file}`);
        const r = await readRevokedKeys(revoked);
        if ('problem' in r) throw new UsageError(`${t.name}: ${r.problem}`, { hint: 'correct the file, or the ssh_config line that names it' });
      }
    }
  }
}

/** --check writes nothing anywhere: not even a new host key, of a node or of a bastion in front of it. */
function readOnly(t: SshTarget): SshTarget {
  return { ...t, readOnly: true, jump: t.jump && readOnly(t.jump) };
}

/** What the inventory asks each node to run; auto starts as nginx until the facts say otherwise. */
export function initialImpl(setup: Setup, node: InventoryNode): NodeImpl {
  const wanted = wantedImpl(setup.loaded.inventory, node);
  return { wanted, impl: wanted === 'auto' ? 'nginx' : wanted };
}

type BuildStep<T extends PlaybookStep['type']> = Extract<PlaybookStep, { type: T }>;

/** How a build is linked, in words: what it needs to run. */
function linkText(b: BuiltBinary): string {
  const f = builtFor(b);
  return f?.static ? `static, musl, runs on any ${f.arch} Linux` : f ? `linked to glibc ${f.glibc}, runs on ${f.arch} with glibc ${f.glibc} or later` : 'native';
}

/** The nginx build step, as the nginx playbook declares it (or the container playbook, for the image's nginx). */
export function buildStepOf(setup: Setup, impl: 'nginx' | 'container' | 'static-pod' = 'nginx'): BuildStep<'nginxBuild'> | undefined {
  const first = setup.nodes[0] ?? setup.loaded.inventory.nodes[0]!;
  return setup.playbooks[impl].steps(first).find((s): s is BuildStep<'nginxBuild'> => s.type === 'nginxBuild');
}

/**
 * The ./configure arguments of an nginxBuild step for this inventory: as the playbook (built-in or
 * --playbook) writes them, plus the HTTP core and stub_status when nginx.statusListen asks for
 * nginx's own status port. Without it, the playbook's arguments unchanged: the same build key.
 */
export function configureOf(inv: Inventory, step: BuildStep<'nginxBuild'>): string[] {
  return inv.nginx?.statusListen ? withStatusModule(step.args.configure) : step.args.configure;
}

/**
 * The build step the image's nginx comes from: the container playbook's where any node runs the
 * container, else the static pod playbook's (each may be replaced with --playbook).
 */
export function imageBuildStepOf(setup: Setup): BuildStep<'nginxBuild'> | undefined {
  const all = setup.nodes.map((n) => initialImpl(setup, n).impl);
  return buildStepOf(setup, !all.includes('container') && all.includes('static-pod') ? 'static-pod' : 'container');
}

/** What the nodes need built: nginx where any may run it (itself or in its image), its image where any runs a container, kube-lb where any runs it or may (auto). */
export function buildsNeeded(setup: Setup): { nginx: boolean; kubeLb: boolean; image: boolean } {
  const all = setup.nodes.map((n) => initialImpl(setup, n));
  // lb.image: the site's own image, nothing to build for it.
  const image = all.some((i) => isImaged(i.impl)) && !setup.loaded.inventory.lb.image;
  return { nginx: image || all.some((i) => i.impl === 'nginx'), kubeLb: all.some((i) => i.impl === 'kube-lb' || i.wanted === 'auto'), image };
}

/** lb.image: the site's own image, which each node's runtime pulls (nothing built, nothing sent). */
function siteImage(setup: Setup): PlanContext['artifacts'][string] | undefined {
  const ref = setup.loaded.inventory.lb.image;
  if (!ref || !setup.nodes.some((n) => isImaged(initialImpl(setup, n).impl))) return undefined;
  return { content: Buffer.alloc(0), sha256: '', ref, pull: true, describe: `image ${ref} (lb.image: the site's own, pulled by each node's runtime)` };
}

/** The balancer's image, made from the nginx build (pure and quick: no cache of its own). */
function imageArtifact(binary: Buffer, built: Pick<BuiltBinary, 'osKey'>, version: string): PlanContext['artifacts'][string] {
  const arch = builtFor(built)?.arch ?? process.arch;
  const img = nginxImage(binary, version, arch === 'x64' ? 'x86_64' : arch);
  return { content: img.archive, sha256: img.sha256, ref: img.ref, binarySha256: img.binarySha256, describe: `image ${img.ref} (${(img.archive.length / 1e6).toFixed(1)} MB: nginx ${version}, static, sha256 ${img.binarySha256.slice(0, 12)})` };
}

async function buildHost(setup: Setup, name: string): Promise<BuildHost> {
  const inv = setup.loaded.inventory;
  if (name === 'controller') return controllerBuildHost(inv.build.installToolchain ?? false, inv.build.link, deadlinesOf(inv));
  const target = setup.targets.get(name)!;
  let conn: SshConnection;
  try {
    conn = await SshConnection.open(target);
  } catch (e) {
    throw new BuildError(`cannot reach the build host ${name}: ${(e as Error).message}`, { hint: (e as ConnectError).hint });
  }
  const req = emptyRequest();
  const facts = parseFacts(req, (await conn.execAsRoot(factScript(req), { kind: 'facts' })).stdout);
  return { name: target.name, link: inv.build.link, os: facts.os, tools: facts.tools, packageManager: facts.packageManager, connection: conn, installToolchain: inv.build.installToolchain ?? true };
}

/**
 * build.store for this run: a folder here (checked when the inventory was loaded), or a build
 * node's, over SFTP as the login user, checked once connected: there, not writable by others, and
 * (unless the run only reads it: --check, status) writable by that user.
 */
async function openStore(setup: Setup, write: boolean): Promise<Store | undefined> {
  const spec = setup.loaded.inventory.build.store;
  if (!spec) return undefined;
  const at = parseStore(spec);
  if (!at.host) return { files: localFs, root: at.path };
  const target = setup.storeTarget!;
  let conn: SshConnection;
  try {
    conn = await SshConnection.open(target);
  } catch (e) {
    throw new BuildError(`cannot reach ${at.host}, which holds the build store (build.store ${spec}): ${(e as Error).message}`, { hint: (e as ConnectError).hint ?? `check that ${at.host} is up and reachable over SSH, or point build.store elsewhere` });
  }
  const files = new SftpFs(conn, at.host);
  const problem = await storeProblem(at.path, files, write).catch((e: Error) => e.message);
  if (problem) {
    files.close();
    throw new BuildError(`build.store in ${setup.options.inventoryFile}: ${problem}`, { hint: `fix the folder on ${at.host}, or point build.store at another` });
  }
  return { files, root: at.path };
}

/** Where a build came from, as a run's summary says it. */
const origin = (b: { cached: boolean; fromStore?: boolean }) => (b.fromStore ? 'from the store' : b.cached ? 'from the cache' : 'built');

/** Where an nginx build came from and which host made it. */
const madeWhere = (b: BuiltBinary) => (b.fromStore ? `from the store (built on ${b.builtOn})` : `${origin(b)} on ${b.builtOn}`);

/** kube-lb for `arch`: each node takes its architecture's (files.ts); the first is also the plain name others ask for. */
function addKubeLb(out: Builds, arch: KubeLbArch, artifact: PlanContext['artifacts'][string]): void {
  out.artifacts[`kube-lb@${arch}`] = artifact;
  out.artifacts['kube-lb'] ??= artifact;
}

/** The architectures kube-lb is built for: build.architectures, else the controller's. */
export function kubeLbArches(inv: Inventory): KubeLbArch[] {
  return inv.build.architectures?.length ? [...new Set(inv.build.architectures)] : [controllerArch() ?? 'x86_64'];
}

/**
 * Build (or find in the cache) what the nodes install. A failure here touches no node, except
 * that nodes on lb.impl auto turn to kube-lb when nginx cannot be built for want of a compiler.
 */
export async function buildArtifacts(setup: Setup, say: (line: string) => void): Promise<Builds> {
  const store = await openStore(setup, true);
  try {
    return await buildThrough(setup, say, store);
  } finally {
    store?.files.close();
  }
}

async function buildThrough(setup: Setup, say: (line: string) => void, store: Store | undefined): Promise<Builds> {
  const inv = setup.loaded.inventory;
  const out: Builds = { artifacts: {}, unknown: [], summary: '' };
  const done: string[] = [];
  const step = buildStepOf(setup);
  const imageStep = imageBuildStepOf(setup);
  const need = buildsNeeded(setup);
  const all = setup.nodes.map((n) => initialImpl(setup, n));
  const forNodes = all.some((i) => i.impl === 'nginx');
  const site = siteImage(setup);
  if (site) {
    out.artifacts[IMAGE_ARTIFACT] = site;
    done.push(site.describe);
  }
  if (need.nginx && (step || imageStep)) {
    const hosts: BuildHost[] = [];
    try {
      // One build per host, each for its own CPU architecture; the first is also the plain `nginx` and the image's.
      const names = buildHostNames(inv.build);
      for (const name of names) {
        const host = await buildHost(setup, name);
        hosts.push(host);
        const twin = hosts.find((h) => h !== host && h.os.arch === host.os.arch);
        if (twin) throw new BuildError(`build.host lists ${twin.name} and ${host.name}, both ${host.os.arch}: nginx is built once per CPU architecture`, { hint: `keep one of them in build.host; list a host of each other architecture the nodes have` });
        if (!forNodes || !step) continue;
        const built = await ensureNginxBinary(inv.nginx!, configureOf(inv, step), host, say, store);
        (out.nginx ??= []).push(built);
        const artifact = {
          content: await fsp.readFile(built.path),
          sha256: built.sha256,
          path: built.path,
          arch: builtFor(built)?.arch,
          identity: built.identity,
          stored: built.stored,
          describe: `nginx ${inv.nginx!.version} (${linkText(built)}, sha256 ${built.sha256.slice(0, 12)}, built on ${built.builtOn})`,
        };
        out.artifacts.nginx ??= artifact;
        if (names.length > 1) out.artifacts[`nginx@${host.os.arch}`] = artifact;
        done.push(`nginx ${inv.nginx!.version} (${linkText(built)}) ${madeWhere(built)}, ${(built.size / 1e6).toFixed(1)} MB, sha256 ${built.sha256.slice(0, 12)}`);
      }
      if (need.image && imageStep) {
        // The image's nginx: the same build as the nodes' when both playbooks configure it alike.
        const built = out.nginx?.[0];
        const same = built && step && JSON.stringify(configureOf(inv, step)) === JSON.stringify(configureOf(inv, imageStep));
        const inImage = same ? built! : await ensureNginxBinary(inv.nginx!, configureOf(inv, imageStep), hosts[0]!, say, store);
        if (!builtFor(inImage)?.static) throw new BuildError('lb.impl container needs a static nginx (the image has no C library), but this build is linked to glibc', { hint: 'remove build.link: native' });
        out.artifacts[IMAGE_ARTIFACT] = { ...imageArtifact(await fsp.readFile(inImage.path), inImage, inv.nginx!.version), arch: builtFor(inImage)?.arch };
        done.push(`${out.artifacts[IMAGE_ARTIFACT]!.describe}, nginx ${inv.nginx!.version} ${same ? 'as above' : `${madeWhere(inImage)}, sha256 ${inImage.sha256.slice(0, 12)}`}`);
      }
    } catch (e) {
      if (!(e instanceof NoToolchainError) || all.some((i) => i.wanted === 'nginx' || isImaged(i.wanted))) throw e;
      // Every node that would run nginx said auto: they run kube-lb, and each says why.
      out.nginxUnbuildable = `nginx cannot be built: ${e.message.split('\n')[0]}`;
      done.push(`nginx not built (${e.message.split('\n')[0]}): the nodes on lb.impl auto get kube-lb`);
    } finally {
      for (const h of hosts) h.connection?.close();
    }
  }
  if (need.kubeLb) {
    try {
      for (const arch of kubeLbArches(inv)) {
        const built = await ensureKubeLb(say, arch, store);
        const artifact = {
          content: await fsp.readFile(built.path),
          sha256: built.sha256,
          path: built.path,
          arch: built.arch,
          identity: built.identity,
          stored: built.stored,
          describe: `${built.version} (sha256 ${built.sha256.slice(0, 12)}, ${built.arch})`,
        };
        addKubeLb(out, arch, artifact);
        done.push(`${built.version} ${origin(built)} (one executable, ${built.arch}), ${(built.size / 1e6).toFixed(1)} MB, sha256 ${built.sha256.slice(0, 12)}`);
      }
    } catch (e) {
      // Only a fallback for auto nodes so far: nginx carries on; those nodes just cannot fall back.
      if (all.some((i) => i.impl === 'kube-lb') || out.nginxUnbuildable) throw e;
      done.push(`kube-lb not built (${(e as Error).message.split('\n')[0]}): nodes on lb.impl auto cannot fall back to it`);
    }
  }
  out.summary = done.join('; ') || 'nothing to build';
  return out;
}

/**
 * --check and status: the builds already in the cache, found without building, installing or
 * writing anything. A binary not built yet is `unknown`: its files are not compared.
 */
export async function cachedArtifacts(setup: Setup): Promise<Builds> {
  const store = await openStore(setup, false);
  try {
    return await cachedThrough(setup, store);
  } finally {
    store?.files.close();
  }
}

async function cachedThrough(setup: Setup, store: Store | undefined): Promise<Builds> {
  const inv = setup.loaded.inventory;
  const out: Builds = { artifacts: {}, unknown: [], summary: '' };
  const need = buildsNeeded(setup);
  const step = buildStepOf(setup);
  const done: string[] = [];
  const forNodes = setup.nodes.some((n) => initialImpl(setup, n).impl === 'nginx');
  const imageStep = imageBuildStepOf(setup);
  const site = siteImage(setup);
  if (site) {
    out.artifacts[IMAGE_ARTIFACT] = site;
    done.push(site.describe);
  }
  const hostNames = buildHostNames(inv.build);
  const os = hostNames[0] === 'controller' ? await controllerOs() : undefined;
  if (need.nginx && forNodes && step && inv.nginx && hostNames.length > 1) {
    // One build per CPU architecture: every architecture's build of these inputs here or in the store.
    const builds = await cachedNginxBuilds(inv.nginx, configureOf(inv, step), inv.build.link, store);
    for (const [arch, b] of builds) {
      if (!b) continue;
      const artifact = { content: Buffer.alloc(0), sha256: b.sha256, arch, describe: `nginx ${inv.nginx.version} (sha256 ${b.sha256.slice(0, 12)}, ${arch}, ${origin(b)})` };
      out.artifacts[`nginx@${arch}`] = artifact;
      out.artifacts.nginx ??= artifact;
      (out.nginx ??= []).push(b);
    }
    if (!out.nginx) out.unknown.push('nginx');
    done.push(builds.size ? `nginx ${inv.nginx.version} found for ${[...builds].filter(([, b]) => b).map(([a]) => a).join(' and ') || 'no architecture'}` : `nginx ${inv.nginx.version} not built yet: its binary is reported as unknown (nothing is built with --check)`);
  } else if (need.nginx && forNodes && step && inv.nginx) {
    const cached = await cachedNginxBinary(inv.nginx, configureOf(inv, step), inv.build.link, os, store);
    if (cached) {
      out.nginx = [cached];
      out.artifacts.nginx = { content: Buffer.alloc(0), sha256: cached.sha256, describe: `nginx ${inv.nginx.version} (sha256 ${cached.sha256.slice(0, 12)}, ${origin(cached)})` };
      done.push(`nginx ${inv.nginx.version} found ${cached.fromStore ? 'in the store' : 'in the cache'}`);
    } else {
      out.unknown.push('nginx');
      done.push(`nginx ${inv.nginx.version} not built yet: its binary is reported as unknown (nothing is built with --check)`);
    }
  }
  if (need.image && imageStep && inv.nginx) {
    // The image is a pure function of its nginx: made here too, so its tag is known without building.
    const cached = await cachedNginxBinary(inv.nginx, configureOf(inv, imageStep), inv.build.link, os, store);
    if (cached) {
      out.artifacts[IMAGE_ARTIFACT] = imageArtifact(await fsp.readFile(cached.path), cached, inv.nginx.version);
      done.push(`${out.artifacts[IMAGE_ARTIFACT]!.describe}, from nginx in the cache`);
    } else {
      out.unknown.push(IMAGE_ARTIFACT);
      done.push(`the image's nginx ${inv.nginx.version} is not built yet: the image is reported as unknown`);
    }
  }
  if (need.kubeLb) {
    for (const arch of kubeLbArches(inv)) {
      const kubeLb = await cachedKubeLb(arch, store).catch(() => undefined);
      if (kubeLb) {
        addKubeLb(out, arch, { content: Buffer.alloc(0), sha256: kubeLb.sha256, arch, describe: `${kubeLb.version} (sha256 ${kubeLb.sha256.slice(0, 12)}, ${arch}, ${origin(kubeLb)})` });
        done.push(`${kubeLb.version} for ${arch} found ${kubeLb.fromStore ? 'in the store' : 'in the cache'}`);
      } else {
        if (!out.unknown.includes('kube-lb')) out.unknown.push('kube-lb');
        done.push(`kube-lb for ${arch} not built yet: its binary is reported as unknown`);
      }
    }
  }
  out.summary = done.join('; ') || 'nothing to build';
  return out;
}

export interface ImplChoice {
  impl: RunImpl;
  /** lb.impl container and static-pod: the node's runtime, from its facts (undefined when it has none). */
  runtime?: Runtime;
  /** With containerd: the snapshotter its CRI plugin uses, from the node's facts. */
  snapshotter?: string;
  why?: string;
  /** nginx on a node that keeps the binary it has (nginx cannot be built this time). */
  keepBinary?: boolean;
}

/**
 * Which balancer a node runs, from what the inventory wants, the node's facts and what could be
 * built. Pure. For lb.impl auto:
 * - nginx, unless the built binary cannot run here (architecture, glibc): then kube-lb;
 * - when nginx cannot be built this time, kube-lb, except on a node serving with nginx already:
 *   it stays on nginx with its binary left as it is, so a passing build problem does not switch
 *   a fleet back and forth.
 */
export function chooseImpl(
  wanted: Impl,
  facts: Pick<HostFacts, 'os' | 'units'>,
  builds: { nginx?: Pick<BuiltBinary, 'osKey'>[]; nginxUnbuildable?: string; kubeLb: boolean },
): ImplChoice {
  if (wanted !== 'auto') return { impl: wanted };
  if (builds.nginxUnbuildable) {
    if (isServing(facts.units[IMPL_UNITS.nginx])) return { impl: 'nginx', keepBinary: true, why: `kept on nginx, its binary left as it is (${builds.nginxUnbuildable})` };
    return { impl: 'kube-lb', why: builds.nginxUnbuildable };
  }
  // One build per build host's CPU architecture: nginx when one of them runs here.
  const whys = (builds.nginx ?? []).map((b) => cannotRun(builtFor(b), facts.os));
  const why = builds.kubeLb && whys.length && whys.every(Boolean) ? whys.join('; ') : undefined;
  return why ? { impl: 'kube-lb', why } : { impl: 'nginx' };
}

/** The steps a node runs for a choice: the implementation's playbook (nginx without its binary when kept). */
export function stepsFor(setup: Setup, node: InventoryNode, choice: ImplChoice, builds?: Pick<Builds, 'artifacts'>): PlaybookStep[] {
  const inv = setup.loaded.inventory;
  const ref = builds?.artifacts[IMAGE_ARTIFACT]?.ref;
  const runtime = isImaged(choice.impl) && choice.runtime ? choice.runtime : inv.lb.runtime !== 'auto' ? inv.lb.runtime : undefined;
  const container = runtime && ref
    ? { runtime, image: ref, repository: imageRepository(ref), binary: builds?.artifacts[IMAGE_ARTIFACT]?.binarySha256 ?? '', snapshotter: choice.snapshotter || 'overlayfs' }
    : undefined;
  const steps = setup.playbooks[choice.impl].steps(node, container);
  return choice.keepBinary ? steps.filter((s) => s.type !== 'nginxBuild' && !(s.type === 'op' && s.op.type === 'file')) : steps;
}
