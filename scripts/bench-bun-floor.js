// The least a proxy on kube-lb's runtime can do, for bench:proxy to measure kube-lb against: accept,
// dial the one backend, forward both ways with Bun's own sockets and backpressure, close both when
// either ends. No health checks, metrics, balancing or timers. Run by the Bun kube-lb is built on.
//   bun scripts/bench-bun-floor.js LISTEN_PORT BACKEND_PORT
const [listen, backend] = process.argv.slice(2).map(Number);

function send(from, to, data) {
  if (to.data.pending) return void to.data.pending.push(data.slice());
  const n = to.write(data);
  if (n >= 0 && n < data.length) {
    to.data.pending = [data.slice(n)];
    from.pause();
  }
}
const handlers = {
  data: (sock, chunk) => sock.data.peer && send(sock, sock.data.peer, chunk),
  drain(sock) {
    const q = sock.data.pending;
    if (!q) return;
    while (q.length) {
      const n = sock.write(q[0]);
      if (n < 0) return;
      if (n < q[0].length) return void (q[0] = q[0].subarray(n));
      q.shift();
    }
    sock.data.pending = undefined;
    sock.data.peer?.resume();
  },
  close: (sock) => sock.data.peer?.end(),
  error: (sock) => sock.data.peer?.terminate(),
};
Bun.listen({
  hostname: '127.0.0.1',
  port: listen,
  exclusive: true,
  socket: {
    ...handlers,
    open(client) {
      client.pause();
      client.data = {};
      Bun.connect({
        hostname: '127.0.0.1',
        port: backend,
        data: { peer: client },
        socket: {
          ...handlers,
          open(upstream) {
            client.data.peer = upstream;
            client.resume();
          },
          connectError: () => client.terminate(),
        },
      }).catch(() => undefined);
    },
  },
});
