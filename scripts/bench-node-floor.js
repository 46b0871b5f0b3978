// The least a Node.js TCP proxy can do, for bench:proxy to measure kube-lb against: accept, dial the
// one backend, forward both ways with backpressure, close both when either ends. No health checks,
// metrics, balancing or timers. Started with the same Node.js and environment as kube-lb.
//   node scripts/bench-node-floor.js LISTEN_PORT BACKEND_PORT
import net from 'node:net';

const [listen, backend] = process.argv.slice(2).map(Number);
const forward = (from, to) => {
  from.on('data', (chunk) => {
    if (!to.write(chunk)) from.pause();
  });
  to.on('drain', () => from.resume());
  from.on('end', () => to.end());
};
net
  .createServer({ pauseOnConnect: true, noDelay: true }, (client) => {
    const upstream = net.connect({ host: '127.0.0.1', port: backend, noDelay: true });
    const done = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', done).on('close', done);
    upstream.on('error', done).on('close', done);
    upstream.once('connect', () => {
      forward(client, upstream);
      forward(upstream, client);
      client.resume();
    });
  })
  .listen({ host: '127.0.0.1', port: listen, backlog: 4096 });
