/**
 * Colours for people, through Node's own util.styleText: chalk cost a fifth of the CLI's start-up
 * for the six styles used here. On when the output is a terminal (or FORCE_COLOR is set), off with
 * NO_COLOR or TERM=dumb, as chalk decided.
 */
import { styleText } from 'node:util';

type Style = 'red' | 'green' | 'yellow' | 'magenta' | 'dim' | 'bold';

function enabled(): boolean {
  if (process.env.NO_COLOR) return false;
  if (process.env.FORCE_COLOR !== undefined) return process.env.FORCE_COLOR !== '0';
  return Boolean(process.stdout.isTTY) && process.env.TERM !== 'dumb';
}

const on = enabled();
const style = (s: Style) => (text: string) => (on ? styleText(s, text) : text);

export const colour = {
  red: style('red'),
  green: style('green'),
  yellow: style('yellow'),
  magenta: style('magenta'),
  dim: style('dim'),
  bold: style('bold'),
};
