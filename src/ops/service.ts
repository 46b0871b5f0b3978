/** A systemd service, enabled and running; notified handlers become daemon-reload, restart or reload here. */
import { z } from 'zod';
import { noop, type Change, type Operation } from './types.js';
import { quote } from '../util/quote.js';

export const service: Operation<{ name: string; enabled: boolean; state: 'running' | 'stopped' }> = {
  type: 'service',
  args: z.strictObject({ name: z.string().regex(/^[A-Za-z0-9@._-]+$/), enabled: z.boolean().default(true), state: z.enum(['running', 'stopped']).default('running') }),
  facts: (a) => ({ units: [a.name] }),
  plan(a, facts, ctx) {
    const u = facts.units[a.name];
    const unit = quote(a.name);
    const changes: Change[] = [];
    // A unit systemd has never loaded needs no daemon-reload to start: systemd >= 248 reads new unit
    // files on demand. One that fails that way (older systemd, or a unit cache with a stale mtime)
    // falls back to daemon-reload and a second try. A changed unit always gets daemon-reload.
    const brandNew = u?.loadState === 'not-found' && a.state === 'running';
    if (ctx.notified.has('daemon-reload') && !brandNew) changes.push({ kind: 'run', command: 'systemctl daemon-reload', label: 'daemon-reload' });
    // --no-reload: enabling only makes the boot-time symlinks; without it systemctl does a second full daemon-reload.
    if (a.enabled && u?.unitFileState !== 'enabled') changes.push({ kind: 'run', command: `systemctl enable -q --no-reload ${unit}`, label: 'enable' });
    if (!a.enabled && u?.unitFileState === 'enabled') changes.push({ kind: 'run', command: `systemctl disable -q --no-reload ${unit}`, label: 'disable' });
    const active = u?.activeState === 'active';
    if (a.state === 'running') {
      // restart (not start) also recovers a unit that is failed or stuck activating.
      if (brandNew) changes.push({ kind: 'run', command: `systemctl restart ${unit} 2>/dev/null || { systemctl daemon-reload && systemctl restart ${unit}; }`, label: 'start' });
      else if (!active) changes.push({ kind: 'run', command: `systemctl restart ${unit}`, label: 'start' });
      else if (ctx.notified.has('restart')) changes.push({ kind: 'run', command: `systemctl restart ${unit}`, label: 'restart' });
      else if (ctx.notified.has('reload')) changes.push({ kind: 'run', command: `systemctl reload ${unit}`, label: 'reload' });
    } else if (active) {
      changes.push({ kind: 'run', command: `systemctl stop ${unit}`, label: 'stop' });
    }
    if (!changes.length) return noop(`${a.name} ${a.state}${a.enabled ? ', enabled' : ''}`);
    return { changes, notify: [], summary: changes.map((c) => (c.kind === 'run' ? c.label : '')).join(', ') };
  },
};
