/**
 * The lab's silent faults, seen from a node as a peer of the master sees them: `partition` drops
 * every packet to and from the master (a new connect gets no SYN-ACK and no reset, an established
 * connection gets neither data nor a close) and `heal` lets the held connection carry on;
 * `power-off` makes the host vanish mid-connection without FIN or reset, and `power-on` brings it
 * back healthy. Each check is what a peer would see, read by bash over /dev/tcp on node-1.
 */
import net from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import type { SshConnection } from '../../src/connect/ssh.js';
import { quote } from '../../src/util/quote.js';
import { k8sha } from '../helpers/cli.js';
import { lab, withNode } from '../helpers/lab.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const master = () => lab().masters.at(-1)!;
const node = () => lab().nodes[0]!;
/** Where the held connection's script on the node leaves what it saw, and waits for the test's word. */
const D = '/tmp/k8s-ha-lab-faults';

const labMaster = (action: string) => k8sha(['lab', 'master', '--dir', lab().dir, master().name, action]);

/** A new connect from the node, bounded by `seconds`: its exit code (124: timed out), time and error. */
async function connectFromNode(c: SshConnection, port: number, seconds: number): Promise<{ rc: number; ms: number; err: string }> {
  const target = quote(`exec 3<>/dev/tcp/${master().address}/${port}`);
  const out = await c.execOk(
    `s=$(date +%s%N); err=$(timeout ${seconds} bash -c ${target} 2>&1); rc=$?; echo "$rc $(( ($(date +%s%N) - s) / 1000000 )) $err"`,
  );
  const [rc, ms, ...err] = out.trim().split(' ');
  return { rc: Number(rc), ms: Number(ms), err: err.join(' ') };
}

/**
 * A connection to the master's sshd, held open by bash on the node: it reads sshd's banner, waits for
 * the test to cut the master off (file `cut`), sends its own banner and listens 3 s (`timeout` exits
 * 124 on silence, `cat` 0 on a close, 1 on a reset); then, when asked to (file `healed`), listens up
 * to 10 s more for sshd's answer to that banner.
 */
function heldConnectionScript(afterHeal: boolean): string {
  const wait = (f: string) => `i=0; while [ ! -e ${D}/${f} ]; do sleep 0.1; i=$((i + 1)); [ $i -lt 600 ] || exit 12; done`;
  return [
    `rm -rf ${D} && mkdir -p ${D}`,
    `exec 3<>/dev/tcp/${master().address}/22 || exit 10`,
    `IFS= read -r -t 5 banner <&3 || exit 11`,
    `printf '%s\\n' "$banner" > ${D}/banner`,
    wait('cut'),
    `printf 'SSH-2.0-k8s-ha-lab-faults\\r\\n' >&3`,
    `timeout 3 cat <&3 > ${D}/during 2> ${D}/during.err; echo "during $? $(wc -c < ${D}/during) $(cat ${D}/during.err)"`,
    ...(afterHeal ? [wait('healed'), `timeout 10 head -c 4 <&3 > ${D}/after; echo "after $? $(wc -c < ${D}/after)"`] : []),
  ].join('\n');
}

async function untilBanner(c: SshConnection): Promise<string> {
  for (let i = 0; i < 100; i++) {
    const r = await c.exec(`cat ${D}/banner 2>/dev/null`);
    if (r.stdout.trim()) return r.stdout.trim();
    await sleep(100);
  }
  throw new Error('the held connection never read sshd’s banner');
}

/** What a connect from this machine saw within `ms`: connected, an error code, or nothing at all. */
function connectFromHere(port: number, ms: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ host: master().address, port });
    const t = setTimeout(() => {
      s.destroy();
      resolve('nothing');
    }, ms);
    s.on('connect', () => (clearTimeout(t), s.destroy(), resolve('connected')));
    s.on('error', (e: NodeJS.ErrnoException) => (clearTimeout(t), resolve(e.code ?? e.message)));
  });
}

async function statusOfMaster(): Promise<{ ok: boolean; detail: string; fault?: string }> {
  const r = await k8sha(['lab', 'status', '--dir', lab().dir, '--json']);
  return JSON.parse(r.stdout).hosts.find((h: { service: string }) => h.service === master().name);
}

afterAll(async () => {
  // Whatever happened above: the master back on the network and powered, as the other files expect.
  await labMaster('heal');
  await labMaster('power-on');
});

describe('lab master partition | heal', () => {
  it('drops every packet silently: no SYN-ACK, no reset, no data, no close; heal lets the held connection carry on', async () => {
    await withNode(node(), async (c) => {
      const held = c.exec(heldConnectionScript(true));
      held.catch(() => undefined);
      try {
        expect(await untilBanner(c)).toMatch(/^SSH-2\.0-/);
        const p = await labMaster('partition');
        expect(p.code, p.stderr).toBe(0);
        expect(p.stdout).toMatch(/partitioned: every packet to and from it is dropped/);
        // Idempotent: a second partition changes nothing and says so.
        expect((await labMaster('partition')).stdout).toMatch(/\(it was already\)/);
        await c.execOk(`touch ${D}/cut`);

        // A new connect to the apiserver port from the node: no SYN-ACK, no refusal, it just times out.
        expect(await connectFromNode(c, 6443, 2)).toMatchObject({ rc: 124, err: '' });
        // And from this machine.
        expect(await connectFromHere(6443, 1500)).toBe('nothing');
        expect(await statusOfMaster()).toMatchObject({ ok: false, fault: 'partitioned' });

        const h = await labMaster('heal');
        expect(h.code, h.stderr).toBe(0);
        expect(h.stdout).toMatch(/healed: packets to and from it flow again$/m);
        await c.execOk(`touch ${D}/healed`);
        const r = await held;
        // 3 s of silence on the established connection (timeout's 124: no data, no FIN, no RST), then
        // sshd's answer to the banner sent during the partition, once a retransmission got through.
        expect(r.stdout).toMatch(/^during 124 0 $/m);
        expect(r.stdout).toMatch(/^after 0 4$/m);
        expect(await connectFromNode(c, 6443, 2)).toMatchObject({ rc: 0 });
        expect(await statusOfMaster()).toMatchObject({ ok: true });
      } finally {
        await labMaster('heal');
        await c.exec(`touch ${D}/cut ${D}/healed`);
        await held.catch(() => undefined);
      }
    });
  }, 60_000);
});

describe('lab up on a lab with a partitioned master', () => {
  it('keeps it partitioned, as lab.json records, and does not count it against the lab', async () => {
    try {
      expect((await labMaster('partition')).code).toBe(0);
      const up = await k8sha(['lab', 'up', '--dir', lab().dir]);
      expect(up.code, up.stderr).toBe(0);
      expect(up.stdout + up.stderr).toMatch(new RegExp(`hosts healthy; ${master().name} partitioned, as lab\\.json records`));
      expect(up.stdout).toMatch(new RegExp(`^${master().name} .*partitioned \\(k8s-ha lab master ${master().name} heal\\)`, 'm'));
      await withNode(node(), async (c) => expect(await connectFromNode(c, 6443, 2)).toMatchObject({ rc: 124, err: '' }));
    } finally {
      await labMaster('heal');
    }
  }, 60_000);
});

describe('lab master power-off | power-on', () => {
  it('the host vanishes mid-connection without FIN or reset, nothing answers its address, power-on brings it back healthy', async () => {
    await withNode(node(), async (c) => {
      const held = c.exec(heldConnectionScript(false));
      held.catch(() => undefined);
      try {
        await untilBanner(c);
        const off = await labMaster('power-off');
        expect(off.code, off.stderr).toBe(0);
        await c.execOk(`touch ${D}/cut`);
        const r = await held;
        expect(r.stdout).toMatch(/^during 124 0 $/m);

        // No refusal, ever: within the first second nothing at all; later at most "No route to host"
        // (once the node's ARP entry for it has failed), as on a real L2 when a host loses power.
        const conn = await connectFromNode(c, 6443, 3);
        expect(conn.err).not.toMatch(/refused/i);
        if (conn.rc === 124) expect(conn.err).toBe('');
        else {
          expect(conn.err).toMatch(/No route to host/);
          expect(conn.ms).toBeGreaterThanOrEqual(1000);
        }
        expect(await statusOfMaster()).toMatchObject({ ok: false, fault: 'powered-off' });

        const on = await labMaster('power-on');
        expect(on.code, on.stderr).toBe(0);
        expect(on.stdout).toMatch(/powered on: the host booted/);
        expect(await statusOfMaster()).toMatchObject({ ok: true });
        expect(await connectFromNode(c, 6443, 2)).toMatchObject({ rc: 0 });
      } finally {
        await labMaster('power-on');
        await c.exec(`touch ${D}/cut`);
        await held.catch(() => undefined);
      }
    });
  }, 90_000);
});
