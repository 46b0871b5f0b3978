/**
 * kube-lb's configuration (YAML or JSON), rendered from the same inventory as
 * kube-nginx's. The data plane reads only this file: it imports nothing of the
 * orchestrator.
 */
import { z } from 'zod';
import { parseHostPort } from '../util/hostport.js';

const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;

const duration = z
  .string()
  .regex(/^(\d+)(ms|s|m|h)$/, 'must be a duration like 500ms, 2s, 10m')
  .transform((v) => {
    const m = /^(\d+)(ms|s|m|h)$/.exec(v)!;
    return Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS];
  });
// Port 0 lets the system pick one (tests on loopback).
const hostPort = z.string().refine((v) => parseHostPort(v, { anyPort: true }) !== undefined, 'must be ADDRESS:PORT with a port from 0 to 65535');

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
      /** Between checks while a backend's verdict is turning (HAProxy's fastinter). */
      fastInterval: duration.default(250),
      /** The whole check: connect, TLS and answer. interval + fall x timeout bounds how long a hung backend keeps its clients. */
      timeout: duration.default(700),
      rise: z.number().int().min(1).default(2),
      fall: z.number().int().min(1).default(2),
      caFile: z.string().optional(),
      /** The CA as PEM text, in the config itself (what deploy writes): one file to validate and swap. */
      ca: z.string().includes('-----BEGIN CERTIFICATE-----', { error: 'must be PEM text with a certificate' }).optional(),
      serverName: z.string().optional(),
      clientCertFile: z.string().optional(),
      clientKeyFile: z.string().optional(),
      insecureSkipVerify: z.boolean().default(false),
    })
    .default({ enabled: true, path: '/readyz', interval: 1000, fastInterval: 250, timeout: 700, rise: 2, fall: 2, insecureSkipVerify: false }),
  /** When a backend goes down: close its connections at once (0), or after this long. */
  drainTimeout: duration.default(0),
  /** SIGTERM: stop accepting at once, let open connections finish for up to this long, then close them. */
  shutdownTimeout: duration.default(1000),
  /**
   * The listen address held by another process (the balancer this one replaces): retry for this
   * long before giving up. The new balancer takes the port the moment the old one lets go.
   */
  listenWait: duration.default(10_000),
});

export type ProxyConfig = z.infer<typeof proxyConfigSchema>;
export type Backend = z.infer<typeof backendSchema>;
