/**
 * haproxy in front of the apiservers, as k8s-ha writes it in both places it runs: the VIP hosts'
 * haproxy (vip.ts) and kube-haproxy, the node-local balancer of `lb.impl: haproxy`. The backend of
 * masters, its TLS /readyz checks and the timeouts are written here once.
 */
import type { Inventory } from '../inventory/schema.js';
import { durationMs } from '../util/duration.js';
import { formatHostPort, hostPortOf } from '../util/hostport.js';
import { CLIENT_PEM, clientPem } from './client-cert.js';
import { clusterCa } from './kube-lb.js';
import { haproxyWord as w, unitWord as u } from './config-words.js';

export const KUBE_HAPROXY_SERVICE = 'kube-haproxy';

/** Seconds, as haproxy and keepalived read them (haproxy also takes ms, s, m, h; plain s is clearest). */
export const seconds = (d: string) => `${Math.max(1, Math.round(durationMs(d) / 1000))}s`;

/** Milliseconds, for the short ones (lb.connectTimeout may be 100ms). */
const millis = (d: string) => `${durationMs(d)}ms`;

export const kubeHaproxyPaths = {
  config: '/etc/haproxy/kube-haproxy.cfg',
  ca: '/etc/haproxy/kube-haproxy-ca.crt',
  /** The checks' client certificate and key (tls.clientCertFile): root's alone, read by haproxy before it drops root. */
  client: CLIENT_PEM.kubeHaproxy,
  pid: '/run/kube-haproxy.pid',
  unit: `/etc/systemd/system/${KUBE_HAPROXY_SERVICE}.service`,
  binary: '/usr/sbin/haproxy',
} as const;

/** The defaults' timeouts: connect to a master, and the idle time of an established stream (client, server, tunnel). */
export function haproxyTimeouts(t: { connect: string; idle: string }): string {
  return `    # A master that refuses or ignores a connection before its check marks it down: the client goes to another.
    timeout connect ${w(t.connect)}
    retries 2
    option redispatch 1
    # Longer than a watch: kubectl logs -f and exec send nothing while idle.
    timeout client ${w(t.idle)}
    timeout server ${w(t.idle)}
    timeout tunnel ${w(t.idle)}
    timeout client-fin 30s
    timeout server-fin 30s`;
}

/**
 * The masters' backend: every master, GET /readyz over TLS verified with the cluster CA (at `ca`)
 * and tls.serverName, `inter 2s fastinter 1s downinter 5s rise 2 fall 2`, and the sessions of a
 * master marked down closed so their clients reconnect to a live one. With tls.clientCertFile the
 * checks present it (`crt`, at `client`): an apiserver with --anonymous-auth=false answers an
 * anonymous /readyz with 401, which would mark every master down at once. `crt` without `ssl`
 * touches only the checks (check-ssl); the clients' own TLS passes through untouched.
 */
export function haproxyBackend(inv: Inventory, o: { name: string; balance: string; ca: string; client: string }): string {
  const verify = inv.tls.caFile && !inv.tls.insecureSkipVerify;
  const sni = inv.tls.serverName;
  const check = [
    'check',
    'check-ssl',
    verify ? `verify required ca-file ${w(o.ca)}` : 'verify none',
    ...(clientPem(inv) ? [`crt ${w(o.client)}`] : []),
    ...(sni ? [`check-sni ${w(sni)}`, ...(verify ? [`verifyhost ${w(sni)}`] : [])] : []),
    'inter 2s fastinter 1s downinter 5s rise 2 fall 2',
    'on-marked-down shutdown-sessions',
  ].join(' ');
  return `backend ${w(o.name)}
    balance ${w(o.balance)}
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host ${w(sni ?? 'kubernetes')}
    http-check expect status 200
    default-server ${check}
${inv.masters.map((m) => `    server ${w(m.name)} ${w(formatHostPort(m.address, m.port))}`).join('\n')}`;
}

/** The CA haproxy verifies the apiservers with, as a file of its own (the VIP hosts' and kube-haproxy's). */
export function renderHaproxyCa(inv: Inventory): string {
  return clusterCa(inv) ?? "# tls.insecureSkipVerify: the apiservers' certificates are not verified\n";
}

/** lb.balance in haproxy's words; hash is the client's address (every node-local client is 127.0.0.1: warned of). */
const BALANCE: Record<Inventory['lb']['balance'], string> = { least_conn: 'leastconn', round_robin: 'roundrobin', hash: 'source' };

export function renderKubeHaproxyConf(inv: Inventory): string {
  const listen = hostPortOf(inv.lb.listen);
  return `# Managed by k8s-ha: changes here are overwritten by the next deploy.
# The node-local apiserver load balancer (lb.impl: haproxy): ${w(inv.lb.listen)} -> ${inv.masters.map((m) => w(m.name)).join(', ')}.
# Checked with: haproxy -c -f ${kubeHaproxyPaths.config}
global
    log /dev/log local0 notice
    user haproxy
    group haproxy
    chroot /var/lib/haproxy
    # As kube-nginx's worker_shutdown_timeout: after a reload, old workers close what they carry after this.
    hard-stop-after 10s

defaults
    mode tcp
    log global
    option dontlognull
${haproxyTimeouts({ connect: millis(inv.lb.connectTimeout), idle: seconds(inv.lb.proxyTimeout) })}

frontend kube_haproxy
    bind ${w(formatHostPort(listen.host, listen.port))}
    default_backend kube_apiservers

${haproxyBackend(inv, { name: 'kube_apiservers', balance: BALANCE[inv.lb.balance], ca: kubeHaproxyPaths.ca, client: kubeHaproxyPaths.client })}
`;
}

export function renderKubeHaproxyUnit(inv: Inventory): string {
  const p = kubeHaproxyPaths;
  return `# Managed by k8s-ha.
# haproxy from the host's package, with a config of its own: the packaged haproxy.service is left
# to whatever else uses it (a VIP host's haproxy). Master-worker mode (-Ws, Type=notify): a reload
# hands the listener to new workers, no connection is refused. No ExecStartPre check: deploy checks
# the staged config with haproxy -c before it is swapped in, haproxy refuses a bad one at start
# anyway (the unit fails with its message), and a switch from another balancer starts haproxy while
# the port is free, so every millisecond before it binds is a refused connection.
[Unit]
Description=kube-haproxy: node-local load balancer for kube-apiserver (${u(inv.lb.listen)})
After=network-online.target
Wants=network-online.target

[Service]
Environment="CONFIG=${p.config}" "PIDFILE=${p.pid}"
ExecStart=${p.binary} -Ws -f $CONFIG -p $PIDFILE
ExecReload=${p.binary} -Ws -f $CONFIG -c -q
ExecReload=/bin/kill -USR2 $MAINPID
KillMode=mixed
Type=notify
Restart=always
RestartSec=2
StartLimitInterval=0
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
`;
}
