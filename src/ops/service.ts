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
    if (ctx.notified.has('daemon-reload')) changes.push({ kind: 'run', command: 'systemctl daemon-reload', label: 'daemon-reload' });
    if (a.enabled && u?.unitFileState !== 'enabled') changes.push({ kind: 'run', command: `systemctl enable -q ${unit}`, label: 'enable' });
    if (!a.enabled && u?.unitFileState === 'enabled') changes.push({ kind: 'run', command: `systemctl disable -q ${unit}`, label: 'disable' });
    const active = u?.activeState === 'active';
    if (a.state === 'running') {
      // restart (not start) also recovers a unit that is failed or stuck activating.
      if (!active) changes.push({ kind: 'run', command: `systemctl restart ${unit}`, label: 'start' });
      else if (ctx.notified.has('restart')) changes.push({ kind: 'run', command: `systemctl restart ${unit}`, label: 'restart' });
      else if (ctx.notified.has('reload')) changes.push({ kind: 'run', command: `systemctl reload ${unit}`, label: 'reload' });
    } else if (active) {
      changes.push({ kind: 'run', command: `systemctl stop ${unit}`, label: 'stop' });
    }
    if (!changes.length) return noop(`${a.name} ${a.state}${a.enabled ? ', enabled' : ''}`);
    return { changes, notify: [], summary: changes.map((c) => (c.kind === 'run' ? c.label : '')).join(', ') };
  },
};
