/**
 * kube-nginx: the nginx stream proxy on every node. Its config and unit are
 * rendered from the inventory here; nothing else knows nginx syntax.
 */
import type { Inventory } from '../inventory/schema.js';
import { formatHostPort, hostPortOf } from '../util/hostport.js';
import { nginxWord as w, unitWord as u } from './config-words.js';
import { durationMs } from '../util/duration.js';

/** nginx reads fail_timeout in seconds only (no ms): a duration with milliseconds is rounded up to whole seconds; any other is written as it is. */
export const wholeSeconds = (v: string): string => (/\d+ms$/.test(v) ? `${Math.ceil(durationMs(v) / 1000)}s` : v);

export const NGINX_SERVICE = 'kube-nginx';
/** The system user nginx's workers run as (the playbook makes it). */
export const NGINX_USER = 'kube-nginx';

// Inventory durations (ms|s|m|h) are written as nginx reads them. How nginx is built is declared in
// playbooks/kube-nginx.yaml (nginxBuild); nginx.statusListen adds the HTTP core (withStatusModule).

export function nginxPaths(prefix: string) {
  return {
    prefix,
    sbin: `${prefix}/sbin`,
    conf: `${prefix}/conf`,
    logs: `${prefix}/logs`,
    binary: `${prefix}/sbin/kube-nginx`,
    config: `${prefix}/conf/kube-nginx.conf`,
    pid: `${prefix}/logs/kube-nginx.pid`,
    unit: `/etc/systemd/system/${NGINX_SERVICE}.service`,
  };
}

function balanceDirective(balance: Inventory['lb']['balance']): string | undefined {
  if (balance === 'least_conn') return 'least_conn;';
  if (balance === 'hash') return 'hash $remote_addr consistent;';
  return undefined; // round_robin is nginx's default
}

/**
 * Where nginx writes what it writes: under the prefix on the host, or, in a container (lb.impl
 * container), its PID file in the image's own /tmp and its log to stderr, which the runtime keeps.
 */
export interface NginxRunPaths {
  errorLog: string;
  pid: string;
  /** With nginx.statusListen: the folder nginx's HTTP core makes for request bodies (default: in the image's /tmp). */
  clientBodyTemp?: string;
}

/**
 * nginx's own status port (nginx.statusListen): /healthz and /stub_status, both stub_status (the
 * build has no rewrite module, so no `return`: a 200 from stub_status says the worker answers),
 * anything else 404 (`internal`: never served to a client). Empty without the field: the config's
 * bytes are then what they were before it existed.
 */
function statusBlock(inv: Inventory, clientBodyTemp: string): string {
  const listen = inv.nginx?.statusListen;
  if (!listen) return '';
  const hp = hostPortOf(listen);
  return `
# nginx's own health and connection counts (nginx.statusListen). No authentication: keep it on loopback.
http {
    access_log off;
    server_tokens off;
    # The HTTP core makes this folder at start, whatever is asked of it.
    client_body_temp_path ${w(clientBodyTemp)};

    server {
        listen ${w(formatHostPort(hp.host, hp.port))};
        location = /healthz {
            stub_status;
        }
        location = /stub_status {
            stub_status;
        }
        location / {
            internal;
        }
    }
}
`;
}

export function renderNginxConf(inv: Inventory, run?: NginxRunPaths): string {
  const p = nginxPaths(inv.lb.prefix);
  const errorLog = run?.errorLog ?? `${p.logs}/error.log`;
  const pid = run?.pid ?? p.pid;
  const listen = hostPortOf(inv.lb.listen);
  const upstream = [
    balanceDirective(inv.lb.balance),
    ...inv.masters.map(
      // nginx reads an IPv6 server only in brackets: [fd00::1]:6443.
      (m) => `server ${w(formatHostPort(m.address, m.port))} max_fails=${w(inv.lb.maxFails)} fail_timeout=${w(wholeSeconds(inv.lb.failTimeout))}; # ${w(m.name)}`,
    ),
  ].filter(Boolean) as string[];
  return `# Managed by k8s-ha: changes here are overwritten by the next deploy.
# The node-local apiserver load balancer: ${w(inv.lb.listen)} -> ${inv.masters.map((m) => w(m.name)).join(', ')}.
# Workers run as kube-nginx (made by the playbook${run ? ', or the image\'s own user' : ''}), not as nginx's built-in nobody and
# nogroup-or-nobody: one binary's built-in names do not exist on every distribution.
user ${NGINX_USER} ${NGINX_USER};
worker_processes 1;
worker_rlimit_nofile 65535;
# A reload starts new workers; old ones close their connections within this time.
worker_shutdown_timeout 10s;
error_log ${w(errorLog)} warn;
pid ${w(pid)};

events {
    worker_connections 16384;
}

stream {
    upstream kube_apiserver {
${upstream.map((l) => `        ${l}`).join('\n')}
    }

    server {
        listen ${w(formatHostPort(listen.host, listen.port))};
        proxy_connect_timeout ${w(inv.lb.connectTimeout)};
        proxy_timeout ${w(inv.lb.proxyTimeout)};
        proxy_pass kube_apiserver;
    }
}
${statusBlock(inv, run ? (run.clientBodyTemp ?? '/tmp/kube-nginx-client-body') : `${p.prefix}/client_body_temp`)}`;
}

export function renderNginxUnit(inv: Inventory): string {
  const p = nginxPaths(inv.lb.prefix);
  const cmd = `${u(p.binary)} -p ${u(p.prefix)} -c ${u(p.config)}`;
  return `# Managed by k8s-ha.
[Unit]
Description=kube-nginx: node-local load balancer for kube-apiserver (${u(inv.lb.listen)})
After=network-online.target
Wants=network-online.target

[Service]
# nginx daemonizes (Type=forking) and names its master in the PID file: in a binary upgrade (USR2)
# the new master writes that file and systemd follows it when the old master exits, so the unit
# keeps running across the upgrade with no connection dropped. (daemon off under Type=exec would
# make the new master a child systemd does not track: the old master's exit would end the unit.)
Type=forking
PIDFile=${u(p.pid)}
ExecStartPre=${cmd} -t
ExecStart=${cmd}
# nginx's parent exits before the daemon has written the PID file; systemd reading it at that moment
# finds it empty ("Failed to parse PID from file"). With an ExecStartPost, systemd reads the PID
# file only after it has run, and this one waits (up to 5 s) until nginx has written it.
ExecStartPost=/bin/sh -c 'for i in $$(seq 500); do [ -s ${u(p.pid)} ] && exit 0; sleep 0.01; done; echo "nginx wrote no PID file to ${u(p.pid)}" >&2; exit 1'
ExecReload=${cmd} -s reload
PrivateTmp=true
Restart=always
RestartSec=5
StartLimitInterval=0
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
`;
}

/** What nginx's stub_status says: connections now (active counts the stream's clients too, and the request asking), totals since start. */
export interface StubStatus {
  active: number;
  reading: number;
  writing: number;
  waiting: number;
  accepts: number;
  handled: number;
  requests: number;
}

/** stub_status's text read into numbers; undefined when it is not that text (another server on the port, a cut answer). */
export function parseStubStatus(text: string): StubStatus | undefined {
  const m =
    /^Active connections:\s*(\d+)\s*\n\s*server accepts handled requests\s*\n\s*(\d+)\s+(\d+)\s+(\d+)\s*\n\s*Reading:\s*(\d+)\s+Writing:\s*(\d+)\s+Waiting:\s*(\d+)\s*$/.exec(
      text.trim(),
    );
  if (!m) return undefined;
  const [active, accepts, handled, requests, reading, writing, waiting] = m.slice(1).map(Number) as number[];
  return { active: active!, reading: reading!, writing: writing!, waiting: waiting!, accepts: accepts!, handled: handled!, requests: requests! };
}
