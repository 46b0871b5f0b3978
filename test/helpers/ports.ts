import net from 'node:net';

/** A TCP port free on 127.0.0.1 now (bound, read and released), for servers a unit test starts on loopback. */
export async function freeLoopbackPort(): Promise<number> {
  const probe = net.createServer().listen(0, '127.0.0.1');
  await new Promise((r) => probe.once('listening', r));
  const n = (probe.address() as net.AddressInfo).port;
  await new Promise((r) => probe.close(r));
  return n;
}
