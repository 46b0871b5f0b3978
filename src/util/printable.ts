/**
 * Text from hosts (a foreign listener's /proc/PID/comm, journal lines, nginx -t output, stderr) made
 * safe for a terminal: every C0 and C1 control character except newline and tab, and DEL, is shown
 * as a visible escape (`\x1b`), so no host can move the cursor, clear the screen, retitle the
 * window or hide a line in what k8s-ha prints. Applied where remote text is rendered, before colour.
 */
// Also the bidirectional overrides and isolates, which reorder what a line seems to say.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/g;

export function printable(text: string): string {
  return text.replace(CONTROL, (c) => {
    const n = c.charCodeAt(0);
    return n > 0xff ? `\\u${n.toString(16)}` : `\\x${n.toString(16).padStart(2, '0')}`;
  });
}

/** The same through every string of a plain value (a report, an event): arrays and plain objects are copied, anything else kept. */
export function printableDeep<T>(value: T): T {
  if (typeof value === 'string') return printable(value) as T;
  if (Array.isArray(value)) return value.map(printableDeep) as T;
  if (value && typeof value === 'object') {
    const proto = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null) return value;
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, printableDeep(v)])) as T;
  }
  return value;
}
