#!/usr/bin/env -S node --max-semi-space-size=64
/** The `dispatcher` executable: see ./program.ts. */

import { main } from './program.js';

main(process.argv).then(
  (code) => {
    if (code !== 0) process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  },
);
