/**
 * kube-lb's data plane, put together: the listener (listener.ts) hands each new client to
 * forward.ts, which dials a backend the pool (pool.ts) offers by the balancing policy
 * (balancer.ts); metrics.ts reports them. main.ts adds the checks, signals and admin port.
 */
import type { ProxyConfig } from './config.js';
import { proxyClient } from './forward.js';
import { Listener, type Bound } from './listener.js';
import { renderMetrics } from './metrics.js';
import { Pool, type Log } from './pool.js';

export { backendKey, LOCAL_ERRORS } from './pool.js';
export type { Log } from './pool.js';

export class Balancer {
  readonly pool: Pool;
  private readonly listener: Listener;
  private rr = 0;

  constructor(cfg: ProxyConfig, log: Log, now: () => number = Date.now) {
    this.pool = new Pool(cfg, log, now);
    this.listener = new Listener(
      // The listener turns clients away itself once stop() has closed it.
      (client) => proxyClient(this.pool, client, this.rr++),
      log,
    );
  }

  get config(): ProxyConfig {
    return this.pool.config;
  }

  get backends() {
    return this.pool.backends;
  }

  /** This process holds the listen address. */
  get listening(): boolean {
    return this.listener.listening;
  }

  /** Bind the listen address, waiting up to listenWait while another process holds it. */
  listen(): Promise<Bound> {
    return this.listener.listen(this.pool.config);
  }

  /** New configuration, same listener: backends that stay keep their connections and health. */
  reload(next: ProxyConfig, unproven?: ReadonlySet<string>): void {
    this.pool.reload(next, unproven);
    this.listener.maxConnections = next.maxConnections;
  }

  healthy(checked = false): boolean {
    return this.pool.healthy(checked);
  }

  metrics(): string {
    return renderMetrics(this.pool, this.listener.refused);
  }

  /** Stop accepting; wait for open connections to finish, up to `graceMs`, then close what is left. */
  async stop(graceMs: number): Promise<void> {
    this.listener.close();
    const deadline = Date.now() + graceMs;
    while (this.pool.open() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    this.pool.closeAll();
  }
}
