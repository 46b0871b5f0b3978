// Entry point of the kube-lb executable.
import { main } from './main.js';

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: Error) => {
    process.stderr.write(`kube-lb: ${e.stack ?? e.message}\n`);
    process.exit(1);
  },
);
