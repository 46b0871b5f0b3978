/**
 * The VIP layer on its hosts: haproxy in front of every master, keepalived holding the virtual
 * IP on one host at a time. Rendered per host from the inventory and the host's facts (the
 * interface its address is on); nothing else knows haproxy's or keepalived's syntax.
 *
 * How the VIP moves, and why this way (ANCHORS: keepalived's and kube-vip's failure modes):
 * - Every host has the same priority and `nopreempt`: the VIP moves only when its holder fails,
 *   never back when a host returns (a return is not a second outage).
 * - The checks carry no weight: a host whose haproxy process is gone or whose
 *   haproxy has no apiserver up (its own /healthz, a vrrp_script) goes to FAULT and releases the
 *   VIP. A weighted check with nopreempt never fails over (keepalived #2599, #2483); with equal
 *   priorities a weight is not needed to lose the election: FAULT leaves it.
 * - Unicast to every peer (clouds and many switches drop multicast VRRP), with
 *   `unicast_fault_no_peer`; `vrrp_startup_delay` so a rebooted host does not claim the VIP
 *   before it has heard the holder (split brain after reboot).
 * - `check_unicast_src`: an advert counts only from a listed peer. Without it any host that can
 *   send IP protocol 112 with our router id and the VIP wins the election with a higher priority:
 *   the holder steps down (with nopreempt the backups then wait for that host: an outage).
 *   And `lower_prio_no_advert`: keepalived's master otherwise restarts its advert timer on every
 *   advert it receives, dropped ones too (vrrp_scheduler.c, 2.2.7 and since), so such a host sending
 *   every second delays the holder's adverts until the backups time out and take the VIP.
 *   The source address can be forged on the hosts' own segment: the firewall rules of docs/security.md and
 *   the network's anti-spoofing cover what keepalived cannot.
 * - `advert_int 1`: a holder that stops advertising is replaced in about 3 s.
 */
import { UsageError } from '../errors.js';
import type { HostFacts } from '../facts/host.js';
import type { Inventory, InventoryVip, VipHost } from '../inventory/schema.js';
import { formatHostPort, hostPortOf } from '../util/hostport.js';
import { CLIENT_PEM, renderClientPem } from './client-cert.js';
import { haproxyBackend, haproxyTimeouts, renderHaproxyCa, seconds } from './haproxy.js';
import { haproxyWord as w, keepalivedWord as k } from './config-words.js';

export const VIP_HAPROXY_SERVICE = 'haproxy';
export const VIP_KEEPALIVED_SERVICE = 'keepalived';

export const VIP_PATHS = {
  haproxyConfig: '/etc/haproxy/haproxy.cfg',
  ca: '/etc/haproxy/k8s-ha-cluster-ca.crt',
  client: CLIENT_PEM.vip,
  keepalivedConfig: '/etc/keepalived/keepalived.conf',
  check: '/etc/keepalived/k8s-ha-check-haproxy',
  notify: '/etc/keepalived/k8s-ha-notify',
  /** Where the notify script records the VRRP state (MASTER, BACKUP, FAULT, STOP): what status reads. */
  state: '/run/k8s-ha/vrrp-state',
} as const;

/** haproxy's backend of masters: its name is what status and the monitor rule refer to. */
export const VIP_BACKEND = 'kube_apiservers';
export const VIP_INSTANCE = 'k8s_ha_vip';


/** The host's own frontend, ADDRESS:PORT (verify goes through it; IPv6 in brackets). */
export function vipHostFrontend(v: InventoryVip, host: Pick<VipHost, 'address'>): string {
  return formatHostPort(host.address, v.port);
}

/** The interface keepalived adds the VIP to: the inventory's, else the one the host's own address is on. */
export function vipInterface(v: InventoryVip, host: VipHost, facts: Pick<HostFacts, 'interfaces'>): string {
  if (v.interface) return v.interface;
  const found = facts.interfaces?.[host.address];
  if (!found) {
    throw new UsageError(`${host.name}: no interface carries its address ${host.address}, so the VIP's interface cannot be found`, {
      hint: 'set vip.interface (e.g. eth0), or correct the host\'s address in the inventory',
    });
  }
  return found;
}

export function renderVipHaproxy(inv: Inventory, host: VipHost): string {
  const v = inv.vip!;
  const stats = hostPortOf(v.statsListen);
  const t = seconds(v.timeout);
  return `# Managed by k8s-ha: changes here are overwritten by the next deploy.
# The VIP endpoint for clients outside the nodes: ${w(formatHostPort(v.address, v.port))} (and ${w(vipHostFrontend(v, host))} on ${w(host.name)})
# -> ${inv.masters.map((m) => w(m.name)).join(', ')}. Checked with: haproxy -c -f ${VIP_PATHS.haproxyConfig}
global
    log /dev/log local0 notice
    user haproxy
    group haproxy
    chroot /var/lib/haproxy
    # A reload starts new workers on the same listeners (master-worker mode, the packaged unit's -Ws);
    # old ones finish their sessions, but never for longer than this.
    hard-stop-after ${seconds(v.hardStopAfter)}

defaults
    mode tcp
    log global
    option tcplog
    option dontlognull
${haproxyTimeouts({ connect: '2s', idle: t })}

frontend k8s_ha_vip
    # The VIP, bound before this host holds it (transparent: a free bind), and the host's own address.
    bind ${w(formatHostPort(v.address, v.port))} transparent
    bind ${w(vipHostFrontend(v, host))}
    default_backend ${VIP_BACKEND}

${haproxyBackend(inv, { name: VIP_BACKEND, balance: 'leastconn', ca: VIP_PATHS.ca, client: VIP_PATHS.client })}

# Loopback only: stats, Prometheus /metrics, and /healthz (503 when no apiserver is up), which keepalived checks.
frontend k8s_ha_stats
    mode http
    bind ${w(formatHostPort(stats.host, stats.port))}
    timeout client 10s
    monitor-uri /healthz
    monitor fail if { nbsrv(${VIP_BACKEND}) lt 1 }
    http-request use-service prometheus-exporter if { path /metrics }
    stats enable
    stats uri /stats
    stats refresh 0
`;
}

export function renderKeepalived(inv: Inventory, host: VipHost, facts: Pick<HostFacts, 'interfaces'>, peers: VipHost[]): string {
  const v = inv.vip!;
  const dev = k(vipInterface(v, host, facts));
  const others = peers.filter((p) => p.name !== host.name);
  const prefix = v.address.includes(':') ? 128 : 32;
  return `# Managed by k8s-ha: changes here are overwritten by the next deploy.
# Holds the VIP ${k(v.address)} on one of ${peers.map((p) => k(p.name)).join(', ')}. Checked with: keepalived -t -f ${VIP_PATHS.keepalivedConfig}
# Equal priorities and nopreempt: the VIP moves only when its holder fails, never back. The checks have
# no weight: a failing one puts this host in FAULT, which releases the VIP (a weight would not, with nopreempt).
global_defs {
    router_id ${k(host.name)}
    enable_script_security
    script_user nobody
    # Listen before claiming: a host that (re)starts hears the holder first, no split brain after a reboot.
    vrrp_startup_delay 5
    vrrp_garp_master_refresh 60
    # Real-time scheduling: a starved keepalived misses adverts and its peers take the VIP too.
    max_auto_priority
}

# haproxy's process gone: FAULT within a second. (Polled, not vrrp_track_process: that needs the
# kernel's process events, which a host in a container, or without CAP_NET_ADMIN, does not get.)
vrrp_script k8s_ha_haproxy_process {
    script "${VIP_PATHS.check} process"
    interval 1
    timeout 1
    rise 1
    fall 1
}

# haproxy up but no apiserver up behind it: its /healthz answers 503.
vrrp_script k8s_ha_haproxy_healthz {
    script "${VIP_PATHS.check} healthz"
    interval 2
    timeout 1
    rise 2
    fall 2
}

vrrp_instance ${VIP_INSTANCE} {
    state BACKUP
    interface ${dev}
    virtual_router_id ${k(v.routerId)}
    priority 100
    nopreempt
    advert_int 1
    unicast_src_ip ${k(host.address)}
    unicast_peer {
${others.map((p) => `        ${k(p.address)}`).join('\n')}
    }
    # Adverts from any other address are dropped (logged: "unicast source address ... not a unicast peer").
    check_unicast_src
    # A master restarts its own advert timer on every advert it receives, even one it drops: a foreign
    # sender every second would hold ours back until the backups take over. With this it does not (and,
    # as the RFCs say, answers a lower-priority advert with its next regular one, not at once).
    lower_prio_no_advert
    unicast_fault_no_peer
    virtual_ipaddress {
        ${k(v.address)}/${prefix} dev ${dev}
    }
    track_script {
        k8s_ha_haproxy_process
        k8s_ha_haproxy_healthz
    }
    notify ${VIP_PATHS.notify} root
}
`;
}

/** keepalived's checks of haproxy: its process, and its own /healthz, in bash with no tool beyond what every host has. */
export function renderVipCheck(inv: Inventory): string {
  const stats = hostPortOf(inv.vip!.statsListen);
  return `#!/bin/bash
# Managed by k8s-ha. keepalived runs this as nobody: with "process" every second (is a haproxy process
# running?), with "healthz" every 2 s (does haproxy on this host have an apiserver up: its /healthz
# answers 200?). Exit 1 puts this host in FAULT, which releases the VIP.
# Shell builtins only: no process is started, every second, on a busy host. The packaged unit's
# PID file names this haproxy (a node-local kube-haproxy on the same host is another process).
if [ "$1" = process ]; then
  { read -r pid < /run/haproxy.pid && read -r comm < "/proc/$pid/comm" && [ "$comm" = haproxy ] && exit 0; } 2>/dev/null
  exit 1
fi
exec 3<>/dev/tcp/${stats.host}/${stats.port} || exit 1
printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3
IFS= read -r -t 1 status <&3 || exit 1
case "$status" in
  *" 200 "*) exit 0 ;;
esac
exit 1
`;
}

/** keepalived's notify: record this host's VRRP state where status reads it. */
export function renderVipNotify(): string {
  const dir = VIP_PATHS.state.slice(0, VIP_PATHS.state.lastIndexOf('/'));
  return `#!/bin/sh
# Managed by k8s-ha. keepalived calls this with: TYPE NAME STATE PRIORITY. The state goes where
# \`k8s-ha status\` reads it.
[ "$2" = "${VIP_INSTANCE}" ] || exit 0
mkdir -p ${dir} && printf '%s %s\\n' "$3" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > ${VIP_PATHS.state}.new && mv -f ${VIP_PATHS.state}.new ${VIP_PATHS.state}
`;
}

/** The templates the VIP playbook names, rendered per host. */
export const VIP_TEMPLATES: Record<string, (inv: Inventory, host: VipHost, facts: HostFacts, peers: VipHost[]) => string> = {
  'vip-haproxy.cfg': (inv, host) => renderVipHaproxy(inv, host),
  'vip-cluster-ca.crt': (inv) => renderHaproxyCa(inv),
  'vip-client.pem': (inv) => renderClientPem(inv),
  'vip-keepalived.conf': (inv, host, facts, peers) => renderKeepalived(inv, host, facts, peers),
  'vip-check-haproxy': (inv) => renderVipCheck(inv),
  'vip-notify': () => renderVipNotify(),
};
