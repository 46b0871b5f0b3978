/**
 * kube-lb's listening socket, on Bun's own sockets. It binds the listen address exclusively (no
 * SO_REUSEPORT: no other process may share it), waiting while another process holds it (the
 * balancer this one replaces, on its way out) so the port changes hands with the shortest possible
 * gap; it hands each new client on paused; past maxConnections it refuses new clients (closed at
 * once, counted) rather than run the node out of descriptors.
 */
/// <reference types="bun-types" />
import { hostPortOf } from '../util/hostport.js';
import { pairHandlers, type Side, type Socket } from './forward.js';
import type { Log } from './pool.js';

export interface ListenSettings {
  listen: string;
  /** How long to wait for the address while another process holds it (ms). */
  listenWait: number;
  /** Open client connections beyond which new ones are refused. */
  maxConnections: number;
}

export interface Bound {
  address: string;
  port: number;
}

export class Listener {
  private server?: Bun.TCPSocketListener<Side>;
  private closing = false;
  private max = Infinity;
  /** Client sockets open now (joined or still dialling). */
  private clients = 0;
  /** Clients refused because maxConnections were open. */
  refused = 0;
  private refusedLogged = 0;

  constructor(
    private readonly onClient: (client: Socket) => void,
    private readonly log: Log,
  ) {}

  get listening(): boolean {
    return !!this.server;
  }

  /** Bind `s.listen`; a listener already bound elsewhere is closed once the new one is bound. */
  async listen(s: ListenSettings): Promise<Bound> {
    const { host, port } = hostPortOf(s.listen);
    const deadline = Date.now() + s.listenWait;
    let waiting = false;
    this.max = s.maxConnections;
    // A new address on the same port: the old listener must go first, or the bind would wait on ourselves.
    if (this.server?.port === port) {
      this.server.stop(false);
      this.server = undefined;
    }
    for (;;) {
      if (this.closing) throw new Error('stopping');
      try {
        const server = Bun.listen<Side>({
          hostname: host,
          port,
          exclusive: true,
          allowHalfOpen: true,
          data: { remote: '' },
          socket: {
            ...pairHandlers,
            open: (sock) => this.accepted(sock, s.listen),
            close: (sock, e) => {
              this.clients--;
              pairHandlers.close!(sock, e);
            },
          },
        });
        const previous = this.server;
        this.server = server;
        previous?.stop(false);
        if (waiting) this.log(`${s.listen} is free: taking it over`);
        return { address: server.hostname, port: server.port };
      } catch (e) {
        if (!inUse(e) || Date.now() >= deadline) throw e;
        if (!waiting) this.log(`${s.listen} is held by another process: waiting up to ${s.listenWait} ms for it`);
        waiting = true;
        await new Promise((r) => setTimeout(r, 5));
      }
    }
  }

  private accepted(sock: Socket, listen: string): void {
    this.clients++;
    if (this.closing || this.clients > this.max) {
      if (!this.closing) this.dropped(listen);
      return void sock.terminate();
    }
    sock.pause();
    sock.setNoDelay(true);
    sock.data = { remote: `${sock.remoteAddress}:${sock.remotePort}` };
    this.onClient(sock);
  }

  /** A new maxConnections for the listener as it is. */
  set maxConnections(n: number) {
    this.max = n;
  }

  private dropped(listen: string): void {
    this.refused++;
    const now = Date.now();
    if (now - this.refusedLogged < 5000) return;
    this.refusedLogged = now;
    this.log(`${this.max} connections are open (maxConnections): refusing new clients on ${listen} (${this.refused} so far)`);
  }

  /** Stop accepting: the port is free as soon as this returns (open connections stay). */
  close(): void {
    this.closing = true;
    this.server?.stop(false);
    this.server = undefined;
  }
}

/** The bind failed because another socket holds the address. */
function inUse(e: unknown): boolean {
  const err = e as NodeJS.ErrnoException;
  return err?.code === 'EADDRINUSE' || /EADDRINUSE|address (is )?(already )?in use/i.test(String(err?.message));
}
