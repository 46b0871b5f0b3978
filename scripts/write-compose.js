// Writes docker-compose.test.yml from the lab's topology (run after `npm run build`).
import fs from 'node:fs';
import { composeForDefaultLab, COMPOSE_FILE } from '../dist/lab/compose.js';

fs.writeFileSync(new URL(`../${COMPOSE_FILE}`, import.meta.url), composeForDefaultLab());
console.log(`wrote ${COMPOSE_FILE}`);
