// Every name a public package exports (each entry of its exports map, values and types alike) must appear in
// its README inside a code span: "the README documents exactly its exports" is then a rule `pnpm test`
// keeps, not a hope. Reads the built declarations, so run it after `tsc -b`.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import ts from 'typescript';

const root = new URL('..', import.meta.url).pathname;
const failures = [];
let checked = 0;

for (const dir of readdirSync(join(root, 'packages'))) {
  const folder = join(root, 'packages', dir);
  if (!existsSync(join(folder, 'package.json'))) continue;
  const pkg = JSON.parse(readFileSync(join(folder, 'package.json'), 'utf8'));
  if (pkg.private) continue;
  const readme = readFileSync(join(folder, 'README.md'), 'utf8');
  // Every code span and fenced block: a name counts as documented only there.
  const code = [...readme.matchAll(/```[\s\S]*?```|`[^`\n]+`/g)].map((m) => m[0]).join('\n');
  for (const [key, target] of Object.entries(pkg.exports ?? {})) {
    if (key === './package.json' || typeof target !== 'object') continue;
    const declarations = join(folder, target.types);
    const program = ts.createProgram([declarations], { noEmit: true, skipLibCheck: true });
    const checker = program.getTypeChecker();
    const source = program.getSourceFile(declarations);
    const module = source && checker.getSymbolAtLocation(source);
    if (!module) {
      failures.push(`${pkg.name} ${key}: no declarations at ${target.types} (run tsc -b first)`);
      continue;
    }
    for (const symbol of checker.getExportsOfModule(module)) {
      checked += 1;
      const name = symbol.getName();
      if (!new RegExp(`(^|[^A-Za-z0-9_$])${name.replace(/\$/g, '\\$')}([^A-Za-z0-9_$]|$)`).test(code))
        failures.push(
          `${pkg.name}${key === '.' ? '' : key.slice(1)}: ${name} is exported but packages/${dir}/README.md does not document it`,
        );
    }
  }
}
if (failures.length > 0) {
  console.error(failures.join('\n'));
  console.error(
    `${failures.length} exported names are undocumented: document them in the README, or stop exporting them.`,
  );
  process.exit(1);
}
console.log(`${checked} exported names, each documented in its package's README`);
