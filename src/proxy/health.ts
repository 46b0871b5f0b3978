/**
 * A backend's health, as a pure state machine fed with events and the time:
 *   passive  `maxFails` failed connects within `failTimeout` mark it down for `failTimeout` (as nginx)
 *   active   the first check decides; then `fall` failed checks in a row mark it down, `rise` good ones up again
 * It takes new connections only when both say up. No I/O, no timers: tested with plain data.
 */

export interface HealthSettings {
  maxFails: number;
  failTimeout: number;
  rise: number;
  fall: number;
  /** Without active checks a backend counts as actively healthy. */
  activeEnabled: boolean;
}

export interface HealthState {
  /** Failed connects inside the current window, and when the window started. */
  fails: number;
  windowStart: number;
  /** Passive ban until this time (ms), 0 when none. */
  bannedUntil: number;
  /** Active: the current verdict and the run of results pointing the other way. */
  activeUp: boolean;
  streak: number;
  /** Whether any active check has finished yet. */
  checked: boolean;
}

export function initialHealth(s: HealthSettings): HealthState {
  // Until its first check ends (a few ms after start) a backend counts as up, as HAProxy does: the
  // first result then decides at once, with no rise or fall to wait for.
  return { fails: 0, windowStart: 0, bannedUntil: 0, activeUp: true, streak: 0, checked: !s.activeEnabled };
}

export function connectFailed(h: HealthState, s: HealthSettings, now: number): HealthState {
  if (s.maxFails === 0) return h;
  const fresh = now - h.windowStart > s.failTimeout;
  const fails = fresh ? 1 : h.fails + 1;
  const next = { ...h, fails, windowStart: fresh ? now : h.windowStart };
  return fails >= s.maxFails ? { ...next, bannedUntil: now + s.failTimeout, fails: 0, windowStart: now } : next;
}

export function checkResult(h: HealthState, s: HealthSettings, ok: boolean): HealthState {
  if (!h.checked) return { ...h, checked: true, activeUp: ok, streak: 0 };
  if (ok === h.activeUp) return { ...h, streak: 0 };
  const streak = h.streak + 1;
  const needed = ok ? s.rise : s.fall;
  return streak >= needed ? { ...h, activeUp: ok, streak: 0 } : { ...h, streak };
}

export function isUp(h: HealthState, now: number): boolean {
  return h.activeUp && now >= h.bannedUntil;
}
