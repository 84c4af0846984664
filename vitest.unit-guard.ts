// What `@etch/test-utils/system` resolves to in `pnpm test:unit`: the unit run has no apt tools and no servers,
// so reaching for them must fail here, loudly, rather than half-work.
throw new Error(
  '@etch/test-utils/system was imported during `pnpm test:unit`. Test files that import it are integration ' +
    'tests and are left out of the unit run (vitest.scope.ts); this import was not seen there (a dynamic or ' +
    'computed import?). Import it statically from the test file or a relative helper, and run it with `pnpm test`.',
);
