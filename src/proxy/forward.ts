/**
 * One client connection through kube-lb, on Bun's own sockets (Bun.listen / Bun.connect): dial a
 * backend, then move bytes both ways.
 * - The client stays paused until a backend accepts, so a failed dial moves on to the next backend
 *   before any client byte is read.
 * - A write the kernel takes only in part keeps the rest and pauses the other side until `drain`
 *   (backpressure); a half-close is passed on once what is pending is written.
 * - The pair is idle when no byte moved either way for idleTimeout: one sweep a second closes those.
 */
/// <reference types="bun-types" />
import { localFailure, type BackendState, type Pair, type Pool } from './pool.js';

/** What each of the two sockets of a pair carries (`socket.data`). */
export interface Side {
  /** The other socket, once joined. */
  peer?: Bun.Socket<Side>;
  /** Bytes the kernel did not take yet, written on `drain`. */
  pending?: Uint8Array[];
  /** This socket has closed. */
  closed?: boolean;
  /** Its far end half-closed before the pair was joined: passed on at the join. */
  ended?: boolean;
  /** The other side half-closed: shut this one's write side once pending is written. */
  ending?: boolean;
  pair?: Link;
  /** The client's address, for the hash policy and the logs. */
  remote: string;
}

export type Socket = Bun.Socket<Side>;

/** A joined pair, as the pool sees it. */
export class Link implements Pair {
  bytesIn = 0;
  bytesOut = 0;
  /** When a byte last moved (the sweep's clock, s). */
  seen = clock;
  private done = false;

  constructor(
    readonly client: Socket,
    readonly upstream: Socket,
    private readonly backend: BackendState,
  ) {}

  /** Close both sockets now (shed, idle, an error): what is in flight is dropped. */
  close(): void {
    this.finished();
    this.client.terminate();
    this.upstream.terminate();
  }

  /** Both sockets closed, or about to be: off the backend's books. */
  finished(): void {
    if (this.done) return;
    this.done = true;
    links.delete(this);
    this.backend.conns.delete(this);
    this.backend.bytesIn += this.bytesIn;
    this.backend.bytesOut += this.bytesOut;
    this.bytesIn = this.bytesOut = 0;
  }
}

/** Seconds, bumped once a second by the sweep: a byte moving costs no clock read. */
let clock = 0;
const links = new Set<Link>();
let sweeper: ReturnType<typeof setInterval> | undefined;
let idleSeconds = 15 * 60;

/** Close pairs idle for longer than the pool's idleTimeout, once a second. */
function sweep(): void {
  clock++;
  for (const l of links) if (clock - l.seen > idleSeconds) l.close();
}

/** Move `data` to `to`; what the kernel does not take waits for `to`'s drain, `from` paused meanwhile. */
function send(from: Socket, to: Socket, data: Uint8Array): void {
  const d = to.data;
  if (d.closed) return;
  if (d.pending) {
    // Still draining (a read that came before the pause took): queued behind it.
    d.pending.push(data.slice());
    return;
  }
  const n = to.write(data);
  if (n === data.length || n < 0) return;
  // Copied: the runtime may reuse the buffer it handed us once this callback returns.
  d.pending = [data.slice(n)];
  from.pause();
}

/** Write what is pending on `sock`; true once nothing is. */
function flush(sock: Socket): boolean {
  const q = sock.data.pending;
  if (!q) return true;
  while (q.length) {
    const head = q[0]!;
    const n = sock.write(head);
    if (n < 0) return false;
    if (n < head.length) {
      q[0] = head.subarray(n);
      return false;
    }
    q.shift();
  }
  sock.data.pending = undefined;
  return true;
}

/** The other side is done sending: pass the half-close on once what is pending is written. */
function passEnd(to: Socket): void {
  if (to.data.closed) return;
  if (to.data.pending) to.data.ending = true;
  else to.shutdown();
}

/** Handlers of both sides of a pair (the listener's clients and the backend connections alike). */
export const pairHandlers: Bun.SocketHandler<Side> = {
  data(sock, chunk) {
    const d = sock.data;
    const peer = d.peer;
    if (!peer || !d.pair) return;
    d.pair.seen = clock;
    if (sock === d.pair.client) d.pair.bytesIn += chunk.length;
    else d.pair.bytesOut += chunk.length;
    send(sock, peer, chunk);
  },
  drain(sock) {
    const d = sock.data;
    if (!d.pending || !flush(sock)) return;
    if (d.pair) d.pair.seen = clock;
    if (d.ending) sock.shutdown();
    else d.peer?.resume();
  },
  end(sock) {
    const peer = sock.data.peer;
    // A client that half-closed while its backend is still being dialled: passed on once joined.
    if (!peer) return void (sock.data.ended = true);
    passEnd(peer);
  },
  close(sock) {
    const d = sock.data;
    d.closed = true;
    const peer = d.peer;
    if (!peer || !d.pair) return;
    // What was queued for this socket can never be written: dropped, and the other side, paused for
    // it, reads again (or its own close would never be seen).
    d.pending = undefined;
    // Gone both ways: the other side finishes writing what it holds, then closes too.
    if (peer.data.closed) d.pair.finished();
    else {
      peer.resume();
      passEnd(peer);
    }
  },
  error(sock) {
    if (sock.data.pair) sock.data.pair.close();
    else sock.terminate();
  },
};

/**
 * Turn a client away that was never joined: an orderly close (FIN), as from a server that went away.
 * It is resumed first, or its own FIN would never be read and the socket never close; what it still
 * sends is dropped (no peer), and one that never closes is closed after 5 s.
 */
function refuse(client: Socket): void {
  if (client.data.closed) return;
  client.resume();
  client.timeout(5);
  client.end();
}

/**
 * Dials to one backend that timed out but are still pending (a backend that drops SYNs: the runtime
 * cannot cancel a connect before it opens, so each holds a descriptor until the kernel gives up, about
 * 2 minutes). Past this many, that backend is not dialled again until some end: the descriptors a
 * dead apiserver can hold stay bounded (kube-lb's unit counts them in its LimitNOFILE).
 */
export const MAX_HANGING_DIALS = 8;
/** And at most this many in all, whatever the number of backends: within the unit's 256 spare descriptors. */
export const MAX_HANGING_TOTAL = 64;
let hangingTotal = 0;

/** Send a new (paused) client to a backend of the pool. `rr` turns the round-robin and the least_conn ties. */
export function proxyClient(pool: Pool, client: Socket, rr: number): void {
  idleSeconds = Math.max(1, Math.round(pool.config.idleTimeout / 1000));
  if (!sweeper) {
    sweeper = setInterval(sweep, 1000);
    sweeper.unref?.();
  }
  const tried = new Set<BackendState>();
  dial(pool, client, rr, tried, pool.choose(pool.candidates(), rr, client.data.remote));
}

/** Connect to b; on failure before any byte, the next untried candidate. */
function dial(pool: Pool, client: Socket, rr: number, tried: Set<BackendState>, b: BackendState | undefined): void {
  // No backend left to try, or the client gone.
  if (!b || client.data.closed) return refuse(client);
  tried.add(b);
  const cfg = pool.config;
  let settled = false;
  const next = () => dial(pool, client, rr, tried, pool.choose(pool.candidates(), rr, client.data.remote, tried));
  if (b.hangingDials >= MAX_HANGING_DIALS || hangingTotal >= MAX_HANGING_TOTAL) {
    pool.connectFailed(b, `${b.hangingDials} earlier connects to it (${hangingTotal} in all) still unanswered`);
    return next();
  }
  /** This dial timed out and still holds its socket. */
  let hanging = false;
  const ended = () => {
    if (hanging) {
      b.hangingDials--;
      hangingTotal--;
    }
    hanging = false;
  };
  const failed = (e?: Error) => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    const local = e && localFailure(e);
    if (local) {
      // Only this client is refused (an orderly close); no other backend is tried (it would meet the same want).
      refuse(client);
      return pool.localError(`connecting to ${b.backend.name} (${b.id})`, local.code, local);
    }
    pool.connectFailed(b, e?.message ?? `connect timeout after ${cfg.connectTimeout} ms`);
    next();
  };
  const timer = setTimeout(() => {
    hanging = true;
    b.hangingDials++;
    hangingTotal++;
    failed();
  }, cfg.connectTimeout);
  Bun.connect<Side>({
    hostname: b.backend.address,
    port: b.backend.port,
    allowHalfOpen: true,
    data: { remote: client.data.remote },
    socket: {
      ...pairHandlers,
      open(upstream) {
        ended();
        if (settled) return void upstream.terminate();
        settled = true;
        clearTimeout(timer);
        // Removed, or marked down while we dialled (and another backend is up), or the client gone: next.
        if (!pool.current(b) || client.data.closed) {
          upstream.terminate();
          return next();
        }
        upstream.setNoDelay(true);
        join(client, upstream, b);
      },
      connectError(_sock, e) {
        ended();
        failed(e);
      },
    },
  }).catch(() => undefined);
}

function join(client: Socket, upstream: Socket, b: BackendState): void {
  const link = new Link(client, upstream, b);
  client.data.peer = upstream;
  upstream.data.peer = client;
  client.data.pair = upstream.data.pair = link;
  b.conns.add(link);
  b.total++;
  links.add(link);
  client.resume();
  if (client.data.ended) passEnd(upstream);
}
