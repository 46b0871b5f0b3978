/**
 * One client connection through kube-lb: dial a backend, then move bytes both ways.
 * - The client stays paused until a backend accepts, so a failed dial moves on to the next backend
 *   before any client byte is read.
 * - Bytes flow by write() with backpressure (pause on a full buffer, resume on drain), and a
 *   half-close is passed on; counters come from the sockets' own byte counts.
 * - One idle timer per pair, on the client socket: reads and writes both ways refresh it.
 */
import net from 'node:net';
import { LOCAL_ERRORS, type BackendState, type Pair, type Pool } from './pool.js';

/** Send a new (paused) client to a backend of the pool. `rr` turns the round-robin and the least_conn ties. */
export function proxyClient(pool: Pool, client: net.Socket, rr: number): void {
  client.on('error', () => client.destroy());
  const tried = new Set<BackendState>();
  dial(pool, client, rr, tried, pool.choose(pool.candidates(), rr, client));
}

/** Connect to b; on failure before any byte, the next untried candidate. */
function dial(pool: Pool, client: net.Socket, rr: number, tried: Set<BackendState>, b: BackendState | undefined): void {
  if (!b || client.destroyed) return void client.destroy();
  tried.add(b);
  const cfg = pool.config;
  const upstream = net.connect({ host: b.backend.address, port: b.backend.port, noDelay: true, autoSelectFamily: false });
  // The socket's own timer covers the connect; it becomes the pair's idle timer once joined.
  upstream.setTimeout(cfg.connectTimeout);
  const next = () => dial(pool, client, rr, tried, pool.choose(pool.candidates(), rr, client, tried));
  const onEarly = (e?: Error) => {
    upstream.destroy();
    const code = (e as NodeJS.ErrnoException | undefined)?.code;
    if (code && LOCAL_ERRORS.has(code)) {
      // Only this client is refused; no other backend is tried (it would meet the same want).
      client.destroy();
      return pool.localError(`connecting to ${b.backend.name} (${b.id})`, code, e!);
    }
    pool.connectFailed(b, e?.message ?? `connect timeout after ${cfg.connectTimeout} ms`);
    next();
  };
  const onTimeout = () => onEarly();
  upstream.once('error', onEarly);
  upstream.once('timeout', onTimeout);
  upstream.once('connect', () => {
    upstream.off('error', onEarly);
    upstream.off('timeout', onTimeout);
    // Removed, or marked down while we dialled (and another backend is up): try the next one.
    if (!pool.current(b)) {
      upstream.destroy();
      return next();
    }
    join({ client, upstream }, b, cfg.idleTimeout);
  });
}

function join(pair: Pair, b: BackendState, idleTimeout: number): void {
  const { client, upstream } = pair;
  b.conns.add(pair);
  b.total++;
  let done = false;
  const finish = () => {
    if (done) return;
    done = true;
    b.conns.delete(pair);
    b.bytesIn += client.bytesRead;
    b.bytesOut += upstream.bytesRead;
    client.destroy();
    upstream.destroy();
  };
  client.on('close', finish);
  upstream.on('error', finish);
  upstream.on('close', finish);
  upstream.setTimeout(0);
  client.setTimeout(idleTimeout, finish);
  forward(client, upstream);
  forward(upstream, client);
  client.resume();
}

/**
 * Bytes from one socket to the other with backpressure, and a half-close passed on: what pipe()
 * does, with three listeners instead of pipe()'s nine (a measurable share of a short connection).
 */
function forward(from: net.Socket, to: net.Socket): void {
  from.on('data', (chunk: Buffer) => {
    if (!to.write(chunk)) from.pause();
  });
  to.on('drain', () => from.resume());
  from.on('end', () => to.end());
}
