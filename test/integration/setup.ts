/** Runs in every integration file: what a file's tests leave in their scratch folder goes with them. */
import { afterAll } from 'vitest';
import { removeScratch } from '../helpers/lab.js';

afterAll(removeScratch);
