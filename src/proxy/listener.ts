/**
 * kube-lb's listening socket. It binds the listen address, waiting while another process holds it
 * (the balancer this one replaces, on its way out) so the port changes hands with the shortest
 * possible gap; it hands each new client on paused; past maxConnections it refuses new clients
 * (closed at once, counted) rather than run the node out of descriptors.
 */
import net from 'node:net';
import { hostPortOf } from '../util/hostport.js';
import type { Log } from './pool.js';

export interface ListenSettings {
  listen: string;
  /** How long to wait for the address while another process holds it (ms). */
  listenWait: number;
  /** Open client connections beyond which new ones are refused. */
  maxConnections: number;
}

export class Listener {
  private server?: net.Server;
  private closing = false;
  /** Clients refused because maxConnections were open. */
  refused = 0;
  private refusedLogged = 0;

  constructor(
    private readonly onClient: (client: net.Socket) => void,
    private readonly log: Log,
    /** A failed accept (the node out of descriptors): the errno code and the error. */
    private readonly onAcceptError: (code: string, e: Error) => void,
  ) {}

  get listening(): boolean {
    return !!this.server?.listening;
  }

  /** Bind `s.listen`; a listener already bound elsewhere is closed once the new one is bound. */
  async listen(s: ListenSettings): Promise<net.AddressInfo> {
    const { host, port } = hostPortOf(s.listen);
    const deadline = Date.now() + s.listenWait;
    let waiting = false;
    // A new address on the same port: the old listener must go first, or the bind would wait on ourselves.
    if ((this.server?.address() as net.AddressInfo | null)?.port === port) {
      this.server!.close();
      this.server = undefined;
    }
    for (;;) {
      if (this.closing) throw new Error('stopping');
      const server = net.createServer({ pauseOnConnect: true, noDelay: true }, this.onClient);
      server.maxConnections = s.maxConnections;
      try {
        const addr = await new Promise<net.AddressInfo>((resolve, reject) => {
          server.once('error', reject);
          server.listen({ host, port, backlog: 4096 }, () => {
            server.off('error', reject);
            // Once listening, an error is a failed accept (out of descriptors): Node emits it on the
            // server, and without a listener it would end the process and every connection with it.
            server.on('error', (err: NodeJS.ErrnoException) => this.onAcceptError(err.code ?? 'EUNKNOWN', err));
            server.on('drop', () => this.dropped(server, s.listen));
            resolve(server.address() as net.AddressInfo);
          });
        });
        const previous = this.server;
        this.server = server;
        previous?.close();
        if (waiting) this.log(`${s.listen} is free: taking it over`);
        return addr;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE' || Date.now() >= deadline) throw e;
        if (!waiting) this.log(`${s.listen} is held by another process: waiting up to ${s.listenWait} ms for it`);
        waiting = true;
        await new Promise((r) => setTimeout(r, 5));
      }
    }
  }

  /** A new maxConnections for the listener as it is. */
  set maxConnections(n: number) {
    if (this.server) this.server.maxConnections = n;
  }

  private dropped(server: net.Server, listen: string): void {
    this.refused++;
    const now = Date.now();
    if (now - this.refusedLogged < 5000) return;
    this.refusedLogged = now;
    this.log(`${server.maxConnections} connections are open (maxConnections): refusing new clients on ${listen} (${this.refused} so far)`);
  }

  /** Stop accepting: the port is free as soon as this returns (open connections stay). */
  close(): void {
    this.closing = true;
    this.server?.close();
  }
}
