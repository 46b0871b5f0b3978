import { describe, expect, it } from 'vitest';
import { countsNow, countsOf, countsSince, countStream, countTls, totalSince, zeroCounts } from '../../src/connect/counts.js';

describe('what a run costs over SSH (counts.ts)', () => {
  it("a run reports what was added since it began, per host and for its hosts together; a bastion's stay out of the total", () => {
    countsOf('c-node-1').logins++;
    const before = countsNow();
    const a = countsOf('c-node-1');
    a.execs += 2;
    a.channels += 3;
    a.bytesOut += 100;
    const b = countsOf('c-node-2');
    b.logins++;
    b.execs++;
    countsOf('c-bastion').bytesIn += 5000;
    expect(countsSince(before, 'c-node-1')).toEqual({ ...zeroCounts(), execs: 2, channels: 3, bytesOut: 100 });
    expect(countsSince(before, 'c-node-2')).toEqual({ ...zeroCounts(), logins: 1, execs: 1 });
    expect(countsSince(before, 'c-never')).toEqual(zeroCounts());
    expect(totalSince(before, ['c-node-1', 'c-node-2'])).toEqual({ ...zeroCounts(), logins: 1, execs: 3, channels: 3, bytesOut: 100 });
  });

  it("a TLS handshake counts against the host whose channel it went through, full or resumed; any other stream's against none", () => {
    const stream = {};
    countStream(stream, countsOf('c-node-3'));
    const before = countsNow();
    countTls(stream, false);
    countTls(stream, true);
    countTls(stream, true);
    countTls({}, false);
    expect(countsSince(before, 'c-node-3')).toMatchObject({ tlsFull: 1, tlsResumed: 2 });
  });
});
