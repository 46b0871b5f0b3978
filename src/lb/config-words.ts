/**
 * One word of a config file k8s-ha writes on a node, checked for the format it goes into. The
 * inventory's rules already refuse anything else at load; these are the last check, where the text
 * is made, for every value (from the inventory or a host's facts) put into nginx's, haproxy's,
 * keepalived's or a systemd unit's text. A value that is not one plain word is refused, never
 * quoted: each format quotes differently, and none of these values needs quotes.
 */
import { UsageError } from '../errors.js';

export type ConfigFormat = 'nginx' | 'haproxy' | 'keepalived' | 'systemd';

/**
 * What each format reads as part of one word: letters, digits and `._:/[]@+=,-`, and `%` except
 * in systemd (a specifier there). Never whitespace, a newline, `#` (a comment in all four), `;`
 * `{` `}` (nginx's and keepalived's syntax), quotes, a backslash or `$` (variables in nginx and
 * systemd, the environment in haproxy), `!` (a comment in keepalived).
 */
const WORD: Record<ConfigFormat, RegExp> = {
  nginx: /^[A-Za-z0-9._:/[\]@%+=,-]+$/,
  haproxy: /^[A-Za-z0-9._:/[\]@%+=,-]+$/,
  keepalived: /^[A-Za-z0-9._:/[\]@%+=,-]+$/,
  systemd: /^[A-Za-z0-9._:/[\]@+=,-]+$/,
};

const NAME: Record<ConfigFormat, string> = { nginx: "nginx's config", haproxy: "haproxy's config", keepalived: "keepalived's config", systemd: 'a systemd unit' };

/** The value, unchanged, when the format reads it as one word; else a UsageError saying what is wrong. */
export function configWord(format: ConfigFormat, value: string | number): string {
  const text = String(value);
  if (WORD[format].test(text)) return text;
  const bad = [...text].find((c) => !WORD[format].test(c));
  const what = bad === undefined ? 'is empty' : `holds ${JSON.stringify(bad)}`;
  throw new UsageError(`${JSON.stringify(text)} cannot be written into ${NAME[format]}: it ${what}, and a value there must be one plain word`, {
    hint: 'correct the inventory value it comes from (the inventory check should have refused it: please report this)',
  });
}

export const nginxWord = (v: string | number) => configWord('nginx', v);
export const haproxyWord = (v: string | number) => configWord('haproxy', v);
export const keepalivedWord = (v: string | number) => configWord('keepalived', v);
export const unitWord = (v: string | number) => configWord('systemd', v);
