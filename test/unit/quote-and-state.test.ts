import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { quote, shellCommand } from '../../src/util/quote.js';
import { checkLabDir, labId, overlaps, pickSubnet } from '../../src/lab/state.js';
import { UsageError } from '../../src/errors.js';

describe('quote', () => {
  it('leaves plain words alone and makes everything else one literal word', () => {
    expect(quote('/opt/k8s/kube-nginx')).toBe('/opt/k8s/kube-nginx');
    expect(quote('')).toBe("''");
    expect(quote("it's $HOME; rm -rf /")).toBe(`'it'\\''s $HOME; rm -rf /'`);
    expect(shellCommand(['printf', '%s\n', 'a b'])).toBe(`printf '%s\n' 'a b'`);
  });
});

describe('lab state', () => {
  it('derives a stable id from the directory', () => {
    expect(labId('/a/.lab')).toMatch(/^k8s-ha-lab-[0-9a-f]{6}$/);
    expect(labId('/a/.lab')).toBe(labId('/a/.lab/'));
    expect(labId('/a/.lab')).not.toBe(labId('/b/.lab'));
  });

  it('picks the first /16 that overlaps no used network', () => {
    expect(overlaps('10.210.0.0/16', '10.210.5.0/24')).toBe(true);
    expect(overlaps('10.210.0.0/16', '10.0.0.0/8')).toBe(true);
    expect(overlaps('10.210.0.0/16', '172.17.0.0/16')).toBe(false);
    expect(pickSubnet(['172.17.0.0/16', '10.210.0.0/16', '10.211.3.0/24'])).toBe('10.212.0.0/16');
    expect(pickSubnet(['10.0.0.0/8'])).toBeUndefined();
  });

  it('refuses a directory holding something that is not a lab, and accepts an empty one', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-state-'));
    expect(await checkLabDir(dir)).toBeUndefined();
    fs.writeFileSync(path.join(dir, 'notes.txt'), 'mine');
    await expect(checkLabDir(dir)).rejects.toThrow(UsageError);
    await expect(checkLabDir(dir)).rejects.toThrow(/holds files that are not a k8s-ha lab \(notes.txt\)/);
    fs.rmSync(dir, { recursive: true });
  });
});
