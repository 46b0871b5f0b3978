/**
 * kube-lb's configuration (YAML or JSON), rendered from the same inventory as
 * kube-nginx's. The data plane reads only this file: it imports nothing of the
 * orchestrator.
 */
import { z } from 'zod';
import { durationMs } from '../inventory/schema.js';

const duration = z.string().regex(/^(\d+)(ms|s|m|h)$/, 'must be a duration like 500ms, 2s, 10m').transform(durationMs);
const hostPort = z.string().regex(/^\[?[^\]\s]+\]?:\d{1,5}$/, 'must be ADDRESS:PORT');

export const backendSchema = z.strictObject({
  name: z.string().min(1),
  address: z.string().min(1),
  port: z.number().int().min(1).max(65535),
});

export const proxyConfigSchema = z.strictObject({
  listen: hostPort.default('127.0.0.1:8443'),
  /** Admin listener: /healthz and /metrics. Loopback only by default. */
  admin: hostPort.default('127.0.0.1:8444'),
  backends: z.array(backendSchema).min(1, 'needs at least one backend'),
  /** least_conn (default), round_robin, or hash on the client's address and port (spreads a node's own clients). */
  balance: z.enum(['least_conn', 'round_robin', 'hash']).default('least_conn'),
  connectTimeout: duration.default(1000),
  /** Close a connection idle this long. client-go watches last 5 to 10 minutes: keep above. */
  idleTimeout: duration.default(15 * 60_000),
  passive: z
    .strictObject({ maxFails: z.number().int().min(0).default(3), failTimeout: duration.default(30_000) })
    .default({ maxFails: 3, failTimeout: 30_000 }),
  active: z
    .strictObject({
      enabled: z.boolean().default(true),
      path: z.string().startsWith('/').default('/readyz'),
      interval: duration.default(1000),
      timeout: duration.default(1000),
      rise: z.number().int().min(1).default(2),
      fall: z.number().int().min(1).default(2),
      caFile: z.string().optional(),
      serverName: z.string().optional(),
      clientCertFile: z.string().optional(),
      clientKeyFile: z.string().optional(),
      insecureSkipVerify: z.boolean().default(false),
    })
    .default({ enabled: true, path: '/readyz', interval: 1000, timeout: 1000, rise: 2, fall: 2, insecureSkipVerify: false }),
  /** When a backend goes down: close its connections at once (0), or after this long. */
  drainTimeout: duration.default(0),
});

export type ProxyConfig = z.infer<typeof proxyConfigSchema>;
export type Backend = z.infer<typeof backendSchema>;
