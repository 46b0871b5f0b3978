/** kube-lb's /metrics: the Prometheus text exposition of the pool and the listener. */
import { LOCAL_ERRORS, type BackendState, type Pair, type Pool } from './pool.js';

type Row = [name: string, type: 'gauge' | 'counter', help: string, value: (b: BackendState) => number];

const BACKEND_ROWS: Row[] = [
  ['kube_lb_backend_up', 'gauge', '1 when the backend takes new connections', (b) => (b.up ? 1 : 0)],
  ['kube_lb_backend_active_connections', 'gauge', 'open connections', (b) => b.conns.size],
  ['kube_lb_backend_connections_total', 'counter', 'connections made', (b) => b.total],
  ['kube_lb_backend_bytes_in_total', 'counter', 'bytes from clients to the backend', (b) => b.bytesIn + sum(b, (c) => c.bytesIn)],
  ['kube_lb_backend_bytes_out_total', 'counter', 'bytes from the backend to clients', (b) => b.bytesOut + sum(b, (c) => c.bytesOut)],
  ['kube_lb_backend_connect_errors_total', 'counter', 'failed connects', (b) => b.connectErrors],
  ['kube_lb_backend_checks_ok_total', 'counter', 'health checks that passed', (b) => b.checksOk],
  ['kube_lb_backend_checks_failed_total', 'counter', 'health checks that failed', (b) => b.checksFailed],
  ['kube_lb_backend_check_duration_seconds', 'gauge', 'duration of the last health check', (b) => b.lastCheckMs / 1000],
  ['kube_lb_backend_last_check_timestamp_seconds', 'gauge', 'when the last health check ended (checks are spread: interval +-20%)', (b) => b.lastCheckAt / 1000],
  ['kube_lb_backend_checks_resumed_total', 'counter', 'health checks that resumed a TLS session instead of a full handshake', (b) => b.checksResumed],
];

export function renderMetrics(pool: Pool, refused: number): string {
  const out: string[] = [];
  const head = (name: string, type: string, help: string) => out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  for (const [name, type, help, value] of BACKEND_ROWS) {
    head(name, type, help);
    for (const b of pool.backends.values()) out.push(`${name}{backend="${b.backend.name}",address="${b.id}"} ${value(b)}`);
  }
  head('kube_lb_local_errors_total', 'counter', "connects that failed for want of this node's own resources (descriptors, local ports, buffers), by errno");
  for (const code of new Set([...LOCAL_ERRORS, ...pool.localErrors.keys()])) out.push(`kube_lb_local_errors_total{code="${code}"} ${pool.localErrors.get(code) ?? 0}`);
  head('kube_lb_refused_connections_total', 'counter', 'clients refused because maxConnections were open');
  out.push(`kube_lb_refused_connections_total ${refused}`);
  head('kube_lb_max_connections', 'gauge', 'open client connections beyond which new ones are refused');
  out.push(`kube_lb_max_connections ${pool.config.maxConnections}`);
  head('kube_lb_backends_up', 'gauge', 'healthy backends');
  out.push(`kube_lb_backends_up ${[...pool.backends.values()].filter((b) => b.up).length}`);
  const m = process.memoryUsage();
  head('kube_lb_memory_bytes', 'gauge', 'memory of this process: resident (rss), the JavaScript heap (heap_total, heap_used), and outside it (external, array_buffers: socket buffers)');
  for (const [kind, v] of [['rss', m.rss], ['heap_total', m.heapTotal], ['heap_used', m.heapUsed], ['external', m.external], ['array_buffers', m.arrayBuffers]] as const) out.push(`kube_lb_memory_bytes{kind="${kind}"} ${v}`);
  return out.join('\n') + '\n';
}

function sum(b: BackendState, f: (c: Pair) => number): number {
  let n = 0;
  for (const c of b.conns) n += f(c);
  return n;
}
