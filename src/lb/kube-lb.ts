/**
 * kube-lb on every node: its config (the proxy's own schema, see src/proxy/config.ts) and
 * its systemd unit, rendered from the inventory. The cluster CA goes inside the config,
 * so one file is validated (`kube-lb --check-config`) and swapped.
 */
import fs from 'node:fs';
import YAML from 'yaml';
import { UsageError } from '../errors.js';
import { CLIENT_PEM, clientPem } from './client-cert.js';
import type { Inventory } from '../inventory/schema.js';
import { DEFAULT_LISTEN_WAIT_MS } from '../proxy/config.js';
import { DISCOVERY_COPY, DISCOVERY_COPY_DIR, DISCOVERY_COPY_ENV } from '../proxy/discovery.js';
import { readyDeadlineMs } from '../proxy/readiness.js';
import { durationMs } from '../util/duration.js';
import { formatHostPort, hostPortOf } from '../util/hostport.js';
import { unitWord as u } from './config-words.js';

export const KUBE_LB_SERVICE = 'kube-lb';

export function kubeLbPaths(prefix: string) {
  return {
    prefix,
    sbin: `${prefix}/sbin`,
    conf: `${prefix}/conf`,
    binary: `${prefix}/sbin/kube-lb`,
    config: `${prefix}/conf/kube-lb.yaml`,
    unit: `/etc/systemd/system/${KUBE_LB_SERVICE}.service`,
  };
}

// Read once per inventory: every node gets the same config.
const caText = new WeakMap<Inventory, string | undefined>();

/** The cluster CA, read once per inventory; undefined without tls.caFile. */
export function clusterCa(inv: Inventory): string | undefined {
  if (!inv.tls.caFile) return undefined;
  if (!caText.has(inv)) {
    let text: string;
    try {
      text = fs.readFileSync(inv.tls.caFile, 'utf8');
    } catch (e) {
      throw new UsageError(`cannot read tls.caFile ${inv.tls.caFile}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, {
        hint: 'point tls.caFile at the cluster CA (the apiservers\' issuer), relative to the inventory file',
      });
    }
    if (!text.includes('-----BEGIN CERTIFICATE-----')) {
      throw new UsageError(`tls.caFile ${inv.tls.caFile} holds no PEM certificate`, { hint: 'use the PEM file of the cluster CA, e.g. /etc/kubernetes/pki/ca.crt' });
    }
    caText.set(inv, text.trim() + '\n');
  }
  return caText.get(inv);
}

/** ADDRESS:PORT the one way, an IPv6 address in brackets, as kube-lb's config reads it. */
const addressPort = (text: string) => {
  const { host, port } = hostPortOf(text);
  return formatHostPort(host, port);
};

/**
 * The checks' client certificate: kubeLb.check's paths on the node when set (the user's own files),
 * else the copy of tls.clientCertFile deploy installs beside the config (certificate and key in one).
 */
function checkClient(inv: Inventory): { clientCertFile?: string; clientKeyFile?: string } {
  const c = inv.kubeLb.check;
  if (c.clientCertFile || c.clientKeyFile) return { ...(c.clientCertFile ? { clientCertFile: c.clientCertFile } : {}), ...(c.clientKeyFile ? { clientKeyFile: c.clientKeyFile } : {}) };
  if (!clientPem(inv)) return {};
  const shipped = CLIENT_PEM.kubeLb(inv.kubeLb.prefix);
  return { clientCertFile: shipped, clientKeyFile: shipped };
}

export function renderKubeLbConf(inv: Inventory): string {
  const k = inv.kubeLb;
  const ca = clusterCa(inv);
  const config = {
    listen: addressPort(inv.lb.listen),
    admin: addressPort(k.admin),
    balance: inv.lb.balance,
    connectTimeout: inv.lb.connectTimeout,
    idleTimeout: inv.lb.proxyTimeout,
    drainTimeout: k.drainTimeout,
    shutdownTimeout: k.shutdownTimeout,
    maxConnections: k.maxConnections,
    passive: { maxFails: inv.lb.maxFails, failTimeout: inv.lb.failTimeout },
    active: {
      path: k.check.path,
      interval: k.check.interval,
      fastInterval: k.check.fastInterval,
      timeout: k.check.timeout,
      rise: k.check.rise,
      fall: k.check.fall,
      ...(inv.tls.serverName ? { serverName: inv.tls.serverName } : {}),
      ...checkClient(inv),
      insecureSkipVerify: inv.tls.insecureSkipVerify,
      ...(ca ? { ca } : {}),
    },
    // An address alone (IPv6 without brackets): kube-lb dials address and port as given.
    backends: inv.masters.map((m) => ({ name: m.name, address: m.address, port: m.port })),
    ...(k.discovery ? { discovery: { kubeconfig: k.discovery.kubeconfig } } : {}),
  };
  return (
    `# Managed by k8s-ha: changes here are overwritten by the next deploy.\n` +
    `# kube-lb, the node-local apiserver load balancer: ${inv.lb.listen} -> ${inv.masters.map((m) => m.name).join(', ')}.\n` +
    `# Check with: ${kubeLbPaths(k.prefix).binary} --check-config ${kubeLbPaths(k.prefix).config}\n` +
    YAML.stringify(config, { lineWidth: 0 })
  );
}

/**
 * systemd's stop timeout: kube-lb lets open connections finish for shutdownTimeout after SIGTERM,
 * so systemd must not SIGKILL it sooner. 30 s (what the unit always had) unless that is too short.
 */
export function stopTimeoutS(inv: Inventory): number {
  return Math.max(30, Math.ceil(durationMs(inv.kubeLb.shutdownTimeout) / 1000) + 10);
}

/**
 * The environment kube-lb runs with (the unit sets it; bench:proxy measures with it): none. The
 * runtime is the pinned Bun compiled into the executable, tuned by nothing on the node.
 */
export const KUBE_LB_ENVIRONMENT: Readonly<Record<string, string>> = {};

/** Descriptors beyond two per connection: listeners, checks, the admin port, stdout. */
const FD_MARGIN = 256;

export function limitNofile(maxConnections: number): number {
  return 2 * maxConnections + FD_MARGIN;
}

/**
 * systemd's start timeout: 10 s longer than ExecStartPost's own wait (`kube-lb --wait-ready`: the
 * port, listenWait, 10 s by default, which the inventory does not change, then a first round of
 * checks), so the waiter gives up first and says why, rather than systemd killing it.
 */
export function startTimeoutS(inv: Inventory): number {
  const active = { interval: durationMs(inv.kubeLb.check.interval), timeout: durationMs(inv.kubeLb.check.timeout) };
  return Math.ceil(readyDeadlineMs({ listenWait: DEFAULT_LISTEN_WAIT_MS, active }) / 1000) + 10;
}

/** The system user kube-lb runs as: it needs no privilege beyond its own sockets. */
export const KUBE_LB_USER = 'kube-lb';

export function renderKubeLbUnit(inv: Inventory): string {
  const p = Object.fromEntries(Object.entries(kubeLbPaths(inv.kubeLb.prefix)).map(([k, v]) => [k, u(v)])) as ReturnType<typeof kubeLbPaths>;
  const lowPort = [inv.lb.listen, inv.kubeLb.admin].some((l) => hostPortOf(l).port < 1024);
  const d = inv.kubeLb.discovery;
  // As root ("+"), into a folder of root's that kube-lb's user can read and not write: nothing it plants is followed.
  // A stale copy goes first; a missing source is ignored ("-"): it stops discovery only.
  const discoveryCopy = d
    ? [
        `-+/usr/bin/install -d -m 0755 -o root -g root ${DISCOVERY_COPY_DIR}`,
        `-+/bin/rm -f ${DISCOVERY_COPY}`,
        `-+/usr/bin/install -m 0440 -o root -g ${KUBE_LB_USER} ${u(d.kubeconfig)} ${DISCOVERY_COPY}`,
      ]
    : undefined;
  return `# Managed by k8s-ha.
# kube-lb runs as its own system user, with nothing it does not use: it reads its config and the CA,
# listens and connects. Binding a port below 1024 is the only capability it may get, and only then.
[Unit]
Description=kube-lb: node-local load balancer for kube-apiserver (${u(inv.lb.listen)})
After=network-online.target
Wants=network-online.target

[Service]
# Started means ready: ExecStartPost keeps the unit activating until this kube-lb (the unit's MainPID)
# holds ${u(inv.lb.listen)} and has checked every apiserver, and fails the start if it does not within
# the wait for the port plus a round of checks. Type=notify would say the same, but kube-lb's runtime
# cannot send sd_notify's datagram, and systemd-notify from a child races its own exit (NotifyAccess).
Type=simple
ExecStartPre=${p.binary} --check-config ${p.config}
${Object.entries(KUBE_LB_ENVIRONMENT).map(([k, v]) => `Environment=${k}=${v}\n`).join('')}${discoveryCopy ? `# kubeLb.discovery: the kubeconfig copied as root where kube-lb's user may read it (group ${KUBE_LB_USER}, 0440)
# and write nothing, at each start and reload, removed after stop; a missing one stops nothing but discovery ("-").
Environment=${DISCOVERY_COPY_ENV}=${DISCOVERY_COPY}
${discoveryCopy.map((c) => `ExecStartPre=${c}`).join('\n')}
ExecStopPost=-+/bin/rm -rf ${DISCOVERY_COPY_DIR}
` : ''}ExecStart=${p.binary} --config ${p.config}
ExecStartPost=${p.binary} --wait-ready ${p.config} \${MAINPID}
${discoveryCopy ? `${discoveryCopy.map((c) => `ExecReload=${c}`).join('\n')}
` : ''}ExecReload=/bin/kill -HUP $MAINPID
Restart=always
RestartSec=2
StartLimitInterval=0
TimeoutStartSec=${startTimeoutS(inv)}
# Two descriptors for each of kubeLb.maxConnections (${inv.kubeLb.maxConnections}), and ${FD_MARGIN} for checks, the admin port, the journal and connects left unanswered (64 at most).
LimitNOFILE=${limitNofile(inv.kubeLb.maxConnections)}
TimeoutStopSec=${stopTimeoutS(inv)}
User=${KUBE_LB_USER}
Group=${KUBE_LB_USER}
${lowPort ? 'AmbientCapabilities=CAP_NET_BIND_SERVICE\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE' : 'CapabilityBoundingSet='}
NoNewPrivileges=true
PrivateTmp=true
PrivateDevices=true
ProtectSystem=strict
ProtectHome=true
ProtectKernelTunables=true
ProtectKernelModules=true
ProtectControlGroups=true
RestrictNamespaces=true
RestrictSUIDSGID=true
LockPersonality=true
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX

[Install]
WantedBy=multi-user.target
`;
}
