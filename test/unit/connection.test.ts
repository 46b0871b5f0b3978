import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { LocalConnection } from '../../src/connect/connection.js';

describe('LocalConnection: this machine through the same interface as a node', () => {
  it('runs a script with a stream on stdin, reports the exit code, and fetches a file', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-local-'));
    const c = new LocalConnection();
    const r = await c.execAsRoot(`cat > ${dir}/in; wc -c < ${dir}/in; echo oops >&2; exit 3`, { input: Readable.from([Buffer.from('hello '), Buffer.from('world')]) });
    expect([r.stdout.trim(), r.stderr.trim(), r.code]).toEqual(['11', 'oops', 3]);
    await c.download(`${dir}/in`, `${dir}/out`);
    expect(fs.readFileSync(`${dir}/out`, 'utf8')).toBe('hello world');
    expect([c.name, c.where]).toEqual(['controller', 'controller']);
    fs.rmSync(dir, { recursive: true });
  });
});
