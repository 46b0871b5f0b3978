/**
 * A long-lived watch through a node's 127.0.0.1:8443, as kubelet holds one: which
 * apiserver stand-in it landed on, its events, and when it was closed.
 */
import https from 'node:https';
import tls from 'node:tls';
import type { SshConnection } from '../../src/connect/ssh.js';
import { lab } from './lab.js';

export interface Watch {
  standin: string;
  events: () => number;
  /** Resolves with the time (ms) the stream closed. */
  closed: Promise<number>;
  isClosed: () => boolean;
  /** The server ended it (the whole chunked stream came), rather than the connection being cut. */
  endedCleanly: () => boolean;
  close: () => void;
}

export function openWatch(c: SshConnection, port = 8443): Promise<Watch> {
  return new Promise((resolve, reject) => {
    let events = 0;
    let clean = false;
    let closedAt: number | undefined;
    let markClosed!: (t: number) => void;
    const closed = new Promise<number>((r) => (markClosed = r));
    const done = () => {
      if (closedAt !== undefined) return;
      closedAt = Date.now();
      markClosed(closedAt);
    };
    c.connectFromHost('127.0.0.1', port).then((stream) => {
      const req = https.request(
        {
          createConnection: () => tls.connect({ socket: stream, ca: lab().caPem, servername: 'kubernetes' }),
          path: '/watch',
          headers: { host: 'kubernetes' },
        },
        (res) => {
          res.on('data', (chunk: Buffer) => (events += chunk.toString().split('\n').filter(Boolean).length));
          res.on('end', () => (clean = true));
          res.on('close', done);
          res.on('error', done);
          resolve({
            standin: String(res.headers['x-standin']),
            events: () => events,
            closed,
            isClosed: () => closedAt !== undefined,
            endedCleanly: () => clean,
            close: () => req.destroy(),
          });
        },
      );
      req.on('error', (e) => {
        done();
        reject(e);
      });
      req.end();
    }, reject);
  });
}

/** Open watches until one lands on each of `names` (least_conn spreads them); close the rest. */
export async function watchesOn(c: SshConnection, names: string[], port = 8443): Promise<Record<string, Watch>> {
  const out: Record<string, Watch> = {};
  const extra: Watch[] = [];
  for (let i = 0; i < 20 && names.some((n) => !out[n]); i++) {
    const w = await openWatch(c, port);
    if (names.includes(w.standin) && !out[w.standin]) out[w.standin] = w;
    else extra.push(w);
  }
  for (const w of extra) w.close();
  const missing = names.filter((n) => !out[n]);
  if (missing.length) throw new Error(`no watch landed on ${missing.join(', ')} in 20 tries`);
  return out;
}
