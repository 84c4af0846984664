#!/usr/bin/env -S node --max-semi-space-size=1 --no-concurrent-recompilation
// A small young generation makes V8 collect the many short-lived buffers of a streaming run early: measured
// ~15 MiB lower peak RSS and no slower (pnpm bench). Optimizing compiles run on the main thread instead of V8's
// worker threads, whose compiler memory went to malloc arenas of their own that glibc kept resident (~20 MiB
// over four arenas at the peak): 10–13 MiB lower peak RSS on the engine-built images of `pnpm bench`, for
// 7–11 % more time on an idle machine there (none under load, none on the synthetic images). The flags only
// apply when this file is run as a program.
import module from 'node:module';

// Node keeps the compiled code of the CLI's modules on disk (NODE_COMPILE_CACHE, else the OS temp dir) and
// reuses it on the next start. It only speeds things up: a cache that cannot be written is not an error.
try {
  module.enableCompileCache?.();
} catch {
  // Starting without the cache is correct, only slower.
}
// Imported after the cache is on, so that these modules are the ones it serves.
const { run } = await import('../dist/cli/run.js');

await run(process.argv.slice(2));
