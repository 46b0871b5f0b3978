/**
 * kube-lb's configuration (YAML or JSON), rendered from the same inventory as
 * kube-nginx's. The data plane reads only this file: it imports nothing of the
 * orchestrator.
 */
import { z } from 'zod';
import { DURATION, durationMs, durationRangeProblem, UNIT_MS } from '../util/duration.js';
import { parseHostPort } from '../util/hostport.js';

const MS = UNIT_MS;

/** kube-lb's default and largest maxConnections: two descriptors each must stay under the kernel's nr_open (2^20). */
export const DEFAULT_MAX_CONNECTIONS = 8192;
export const MAX_CONNECTIONS = 500_000;
/** How long kube-lb waits for its listen address by default (the balancer it replaces letting go). */
export const DEFAULT_LISTEN_WAIT_MS = 10_000;

/**
 * A duration within the field's range, in milliseconds. None may exceed 2^31-1 ms, the longest a Node.js
 * timer waits (beyond it a timer fires at once: a check interval would become a flood of checks).
 */
const duration = (minMs: number, maxMs: number) =>
  z
    .string()
    .regex(DURATION, 'must be a duration like 500ms, 2s, 10m or 1h30m')
    .superRefine((v, ctx) => {
      const problem = durationRangeProblem(v, { minMs, maxMs });
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    })
    .transform(durationMs);

export const count = (min: number, max: number) => z.number().int('must be a whole number').min(min, `must be from ${min} to ${max}`).max(max, `must be from ${min} to ${max}`);

/** ADDRESS:PORT to listen on, port 1 to 65535 (port 0, "any", would leave kubelet no port to dial). */
const hostPort = z.string().refine((v) => parseHostPort(v) !== undefined, 'must be ADDRESS:PORT with a port from 1 to 65535 (an IPv6 address in brackets)');

/** A request path as an HTTP request line carries it: starts with /, no spaces or control characters. */
export const requestPath = z.string().regex(/^\/[\x21-\x7e]*$/, 'must be a request path: a / then printable characters, no spaces (e.g. /readyz)');

export const backendSchema = z.strictObject({
  name: z.string().min(1),
  address: z.string().min(1),
  port: count(1, 65535),
});

export const proxyConfigSchema = z.strictObject({
  listen: hostPort.default('127.0.0.1:8443'),
  /** Admin listener: /healthz and /metrics. Loopback only by default. */
  admin: hostPort.default('127.0.0.1:8444'),
  backends: z.array(backendSchema).min(1, 'needs at least one backend'),
  /** least_conn (default), round_robin, or hash on the client's address and port (spreads a node's own clients). */
  balance: z.enum(['least_conn', 'round_robin', 'hash']).default('least_conn'),
  /** 100ms to 75s: the kernel gives up a connect before 75 s anyway. */
  connectTimeout: duration(100, 75 * MS.s).default(1000),
  /** Close a connection idle this long (1s to 24h). client-go watches last 5 to 10 minutes: keep above. */
  idleTimeout: duration(MS.s, 24 * MS.h).default(15 * 60_000),
  passive: z
    .strictObject({ maxFails: count(0, 1000).default(3), failTimeout: duration(MS.s, MS.h).default(30_000) })
    .default({ maxFails: 3, failTimeout: 30_000 }),
  active: z
    .strictObject({
      enabled: z.boolean().default(true),
      path: requestPath.default('/readyz'),
      /** 100ms to 1h: below, the checks alone load every apiserver (each node checks each). */
      interval: duration(100, MS.h).default(1000),
      /** Between checks while a backend's verdict is turning (HAProxy's fastinter), 100ms to 1h. */
      fastInterval: duration(100, MS.h).default(250),
      /** The whole check: connect, TLS and answer (100ms to 1m). interval + fall x timeout bounds how long a hung backend keeps its clients. */
      timeout: duration(100, MS.m).default(700),
      rise: count(1, 100).default(2),
      fall: count(1, 100).default(2),
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
  drainTimeout: duration(0, MS.h).default(0),
  /** SIGTERM: stop accepting at once, let open connections finish for up to this long (0s to 1h), then close them. */
  shutdownTimeout: duration(0, MS.h).default(1000),
  /**
   * The listen address held by another process (the balancer this one replaces): retry for this
   * long before giving up. The new balancer takes the port the moment the old one lets go.
   */
  listenWait: duration(0, 10 * MS.m).default(DEFAULT_LISTEN_WAIT_MS),
  /**
   * Open client connections beyond which new ones are refused (closed at once, counted): each takes
   * two descriptors, and the unit's LimitNOFILE is sized from this. 1 to 500000.
   */
  maxConnections: count(1, MAX_CONNECTIONS).default(DEFAULT_MAX_CONNECTIONS),
  /**
   * Opt-in: follow the cluster's apiservers (the kubernetes Service's EndpointSlices, discovery.ts),
   * asked with this kubeconfig's credentials; `backends` are the seeds.
   */
  discovery: z.strictObject({ kubeconfig: z.string().regex(/^\//, 'must be an absolute path') }).optional(),
});

export type ProxyConfig = z.infer<typeof proxyConfigSchema>;
export type Backend = z.infer<typeof backendSchema>;
