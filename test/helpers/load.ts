/**
 * Traffic a kubelet would make, from inside a node through its 127.0.0.1:8443 (or another server it is given):
 * short requests about 20 a second, and one long-lived watch stream. Every
 * request and event is recorded so a test can count failures.
 */
import https from 'node:https';
import tls from 'node:tls';
import { httpsGet } from '../../src/connect/https-probe.js';
import { SshConnection } from '../../src/connect/ssh.js';
import { lab, nodeTarget } from './lab.js';

export interface LoadReport {
  node: string;
  requests: number;
  failures: string[];
  /** Which stand-ins answered the short requests. */
  backends: Record<string, number>;
  watch: { events: number; firstEventAt?: number; lastEventAt?: number; closedAt?: number; error?: string };
}

export class NodeLoad {
  private conn?: SshConnection;
  private running = false;
  private loop?: Promise<void>;
  private watchReq?: ReturnType<typeof https.request>;
  readonly report: LoadReport;

  constructor(
    private readonly node: { name: string; address: string },
    private readonly to: { host: string; port: number } = { host: '127.0.0.1', port: 8443 },
  ) {
    this.report = { node: node.name, requests: 0, failures: [], backends: {}, watch: { events: 0 } };
  }

  async start(): Promise<void> {
    this.conn = await SshConnection.open(nodeTarget(this.node));
    this.running = true;
    this.startWatch(await this.conn.connectFromHost(this.to.host, this.to.port));
    this.loop = (async () => {
      while (this.running) {
        const t0 = Date.now();
        try {
          const r = await httpsGet(() => this.conn!.connectFromHost(this.to.host, this.to.port), {
            path: '/version',
            ca: lab().caPem,
            servername: 'kubernetes',
            timeoutMs: 5000,
          });
          if (r.status !== 200) this.report.failures.push(`${new Date().toISOString()} HTTP ${r.status}`);
          else {
            const who = JSON.parse(r.body).standin as string;
            this.report.backends[who] = (this.report.backends[who] ?? 0) + 1;
          }
        } catch (e) {
          this.report.failures.push(`${new Date().toISOString()} ${(e as Error).message}`);
        }
        this.report.requests++;
        await new Promise((res) => setTimeout(res, Math.max(0, 50 - (Date.now() - t0))));
      }
    })();
  }

  private startWatch(stream: import('node:stream').Duplex): void {
    const w = this.report.watch;
    this.watchReq = https.request(
      {
        createConnection: () => tls.connect({ socket: stream, ca: lab().caPem, servername: 'kubernetes' }),
        path: '/watch',
        headers: { host: 'kubernetes' },
      },
      (res) => {
        res.on('data', (chunk: Buffer) => {
          const now = Date.now();
          w.events += chunk.toString().split('\n').filter(Boolean).length;
          w.firstEventAt ??= now;
          w.lastEventAt = now;
        });
        res.on('close', () => (w.closedAt ??= Date.now()));
      },
    );
    this.watchReq.on('error', (e) => {
      if (this.running) w.error = e.message;
      w.closedAt ??= Date.now();
    });
    this.watchReq.end();
  }

  async stop(): Promise<LoadReport> {
    this.running = false;
    await this.loop;
    this.watchReq?.destroy();
    this.conn?.close();
    return this.report;
  }
}

export async function withLoad<T>(nodes: { name: string; address: string }[], fn: () => Promise<T>, to?: { host: string; port: number }): Promise<{ result: T; reports: LoadReport[] }> {
  const loads = nodes.map((n) => new NodeLoad(n, to));
  await Promise.all(loads.map((l) => l.start()));
  try {
    const result = await fn();
    return { result, reports: await Promise.all(loads.map((l) => l.stop())) };
  } catch (e) {
    await Promise.all(loads.map((l) => l.stop()));
    throw e;
  }
}
