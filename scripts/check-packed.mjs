// Installs every public package the way a user would get it, outside this monorepo: built, packed with
// `pnpm pack`, installed from the tarballs into an empty project with a strict layout (isolated, nothing
// hoisted, so a dependency a package forgot to declare cannot be borrowed from a neighbour). Then, from
// plain ESM, every entry point of every package is imported and must yield the names it yields here,
// `etch --version` runs from the installed dotetch, and a strict NodeNext TypeScript consumer that imports
// every entry type-checks. Workspace links hide all of this: only a packed install shows it.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { pathToFileURL } from 'node:url';

const root = new URL('..', import.meta.url).pathname;
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
const started = performance.now();

/** A failure of the check: the message names the package and the entry point. */
class CheckFailed extends Error {}

/** Every packages/* whose package.json is not private: what a release publishes. */
function publicPackages() {
  return readdirSync(join(root, 'packages'))
    .filter((dir) => existsSync(join(root, 'packages', dir, 'package.json')))
    .map((dir) => ({ dir, pkg: JSON.parse(readFileSync(join(root, 'packages', dir, 'package.json'), 'utf8')) }))
    .filter(({ pkg }) => !pkg.private)
    .map(({ dir, pkg }) => ({ dir, name: pkg.name, version: pkg.version, pkg }));
}

/** Runs a command; resolves with its output, rejects with it (and the command line) when it fails. */
function run(command, args, { cwd = root, env = process.env } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0
        ? resolve(out)
        : reject(new CheckFailed(`${command} ${args.join(' ')} (in ${cwd}) exited ${code}:\n${out}`)),
    );
  });
}

/** The entry points of a package: every key of its exports map but ./package.json, with its targets. */
function entriesOf({ name, pkg }) {
  const exports = typeof pkg.exports === 'string' || !pkg.exports ? { '.': pkg.exports } : pkg.exports;
  return Object.entries(exports)
    .filter(([key]) => key !== './package.json')
    .map(([key, target]) => {
      if (key.includes('*')) throw new CheckFailed(`${name}: export "${key}" is a pattern; list its entries instead`);
      const specifier = key === '.' ? name : `${name}/${key.slice(2)}`;
      return { key, specifier, conditions: typeof target === 'string' ? { default: target } : target };
    });
}

/** Every file path an exports map or bin field names, which the tarball must therefore hold. */
function namedFiles(entries, pkg) {
  const targets = entries.flatMap((entry) => flatTargets(entry.conditions).map((file) => ({ ...entry, file })));
  const bins = typeof pkg.bin === 'string' ? { [pkg.name]: pkg.bin } : (pkg.bin ?? {});
  for (const [bin, file] of Object.entries(bins)) targets.push({ key: `bin ${bin}`, file });
  return targets;
}

function flatTargets(target) {
  if (typeof target === 'string') return [target];
  if (target === null) return [];
  return Object.values(target).flatMap(flatTargets);
}

/** What a published package.json must say about where the package comes from and under which license. */
function metadataProblems({ dir, name, pkg }) {
  const problems = [];
  const license = readFileSync(join(root, 'LICENSE'), 'utf8');
  if (pkg.license !== 'Apache-2.0')
    problems.push(`${name}: "license" is ${JSON.stringify(pkg.license)}, not "Apache-2.0"`);
  const own = join(root, 'packages', dir, 'LICENSE');
  if (existsSync(own) && readFileSync(own, 'utf8') !== license)
    problems.push(`${name}: packages/${dir}/LICENSE is not a copy of the root LICENSE`);
  if (pkg.repository?.directory !== `packages/${dir}`)
    problems.push(`${name}: "repository" lacks { "directory": "packages/${dir}" } (and "type" and "url")`);
  for (const field of ['homepage', 'bugs']) if (!pkg[field]) problems.push(`${name}: package.json has no "${field}"`);
  return problems;
}

/** Packs every package with one pnpm; checks each tarball holds what it must and nothing it must not. */
async function pack(packages, dest) {
  const filters = packages.flatMap((p) => ['--filter', p.name]);
  const out = await run('pnpm', [...filters, '--recursive', 'pack', '--pack-destination', dest, '--json']);
  const results = new Map([JSON.parse(out)].flat().map((result) => [result.name, result]));
  const problems = [];
  const packed = packages.map((p) => {
    const result = results.get(p.name);
    if (!result) {
      problems.push(`${p.name}: pnpm pack made no tarball`);
      return p;
    }
    const files = new Set(result.files.map((f) => f.path));
    for (const file of files) {
      if (/\.test\./.test(file)) problems.push(`${p.name}: the tarball holds the test file ${file}`);
      if (file.endsWith('.tsbuildinfo')) problems.push(`${p.name}: the tarball holds the build state ${file}`);
    }
    for (const file of ['LICENSE', 'README.md', 'package.json'])
      if (!files.has(file)) problems.push(`${p.name}: the tarball lacks ${file}`);
    problems.push(...metadataProblems(p));
    // src ships so that source maps, declaration maps (go to definition) and the @etch/source condition work.
    const stale = new Set();
    for (const map of [...files].filter((f) => f.endsWith('.map'))) {
      const { sources = [] } = JSON.parse(readFileSync(join(root, 'packages', p.dir, map), 'utf8'));
      for (const source of sources) {
        const target = posix.join(posix.dirname(map), source);
        if (files.has(target)) continue;
        // tsc -b leaves the output of a deleted or moved source behind: that would be published too.
        if (!existsSync(join(root, 'packages', p.dir, target))) stale.add(target);
        else problems.push(`${p.name}: ${map} points at ${target}, which is not in the tarball`);
      }
    }
    if (stale.size)
      problems.push(
        `${p.name}: dist holds the output of sources that no longer exist (${[...stale].join(', ')}); run \`pnpm clean && pnpm build\``,
      );
    for (const { key, file } of namedFiles(entriesOf(p), p.pkg))
      if (!files.has(file.replace(/^\.\//, '')))
        problems.push(`${p.name}: export "${key}" names ${file}, which is not in the tarball`);
    return { ...p, tarball: result.filename };
  });
  if (problems.length) throw new CheckFailed(problems.join('\n'));
  return packed;
}

/**
 * The names each entry must yield: those its built module yields here in the workspace (dist, just built
 * from the entry's source), so an installed package must give a consumer exactly what the monorepo sees.
 */
async function expectedNames(packages) {
  const expected = [];
  for (const p of packages)
    for (const entry of entriesOf(p)) {
      const file = entry.conditions.import ?? entry.conditions.default;
      if (typeof file !== 'string')
        throw new CheckFailed(`${entry.specifier}: export "${entry.key}" has no plain "import" or "default" target`);
      const module = await import(pathToFileURL(join(root, 'packages', p.dir, file)).href);
      expected.push({ specifier: entry.specifier, names: Object.keys(module).sort() });
    }
  return expected;
}

/** Settings a user's project would need: builds of native dependencies allowed as this workspace allows them. */
function allowedBuilds() {
  const yaml = readFileSync(join(root, 'pnpm-workspace.yaml'), 'utf8');
  const block = /^onlyBuiltDependencies:\n((?:[ \t]+-.*\n?)*)/m.exec(yaml)?.[1] ?? '';
  return [...block.matchAll(/-\s*['"]?([^'"\s]+)/g)].map((m) => m[1]);
}

/** Child processes get a clean pnpm config: what `pnpm test` exports for its scripts must not leak in. */
const cleanEnv = Object.fromEntries(
  Object.entries(process.env).filter(([key]) => !/^(npm|pnpm)_(config|package|lifecycle)_/i.test(key)),
);

async function install(project, packed) {
  const files = Object.fromEntries(packed.map((p) => [p.name, `file:${p.tarball}`]));
  const typesNode = JSON.parse(readFileSync(join(root, 'node_modules', '@types', 'node', 'package.json'), 'utf8'));
  await writeFile(
    join(project, 'package.json'),
    JSON.stringify({
      name: 'etch-packed-consumer',
      private: true,
      type: 'module',
      dependencies: files,
      devDependencies: { '@types/node': typesNode.version },
      // Every @etch package (and dotetch) comes from its tarball, also where another one depends on it.
      pnpm: { overrides: files, onlyBuiltDependencies: allowedBuilds() },
    }),
  );
  // The strict layout: each package sees only what it declares (no hoisting, not even into .pnpm/node_modules).
  await writeFile(
    join(project, '.npmrc'),
    'node-linker=isolated\nhoist=false\npublic-hoist-pattern=\nlockfile=false\n',
  );
  await run('pnpm', ['install', '--prefer-offline', '--reporter=append-only'], { cwd: project, env: cleanEnv });
}

/** Imports every entry in one plain Node process started in the consumer project. */
async function checkImports(project, expected) {
  await writeFile(join(project, 'expected.json'), JSON.stringify(expected));
  await writeFile(
    join(project, 'import-all.mjs'),
    `import { readFileSync } from 'node:fs';
const problems = [];
for (const { specifier, names } of JSON.parse(readFileSync(new URL('./expected.json', import.meta.url), 'utf8'))) {
  let actual;
  try {
    actual = Object.keys(await import(specifier)).sort();
  } catch (error) {
    problems.push(\`\${specifier}: import failed: \${error.code ?? ''} \${error.message}\`);
    continue;
  }
  const missing = names.filter((n) => !actual.includes(n));
  const extra = actual.filter((n) => !names.includes(n));
  if (missing.length) problems.push(\`\${specifier}: does not yield \${missing.join(', ')}\`);
  if (extra.length) problems.push(\`\${specifier}: yields \${extra.join(', ')}, which the workspace build does not\`);
}
if (problems.length) {
  console.error(problems.join('\\n'));
  process.exit(1);
}
`,
  );
  await run(process.execPath, ['import-all.mjs'], { cwd: project, env: cleanEnv }).catch((error) => {
    throw new CheckFailed(`importing the installed packages failed:\n${error.message.replace(/^.*\n/, '')}`);
  });
}

async function checkBin(project, packed) {
  for (const p of packed)
    for (const bin of Object.keys(typeof p.pkg.bin === 'string' ? { [p.name]: p.pkg.bin } : (p.pkg.bin ?? {}))) {
      const out = await run(join(project, 'node_modules', '.bin', bin), ['--version'], {
        cwd: project,
        env: cleanEnv,
      }).catch((error) => {
        throw new CheckFailed(`${p.name}: \`${bin} --version\` failed:\n${error.message}`);
      });
      if (out.trim() !== p.version)
        throw new CheckFailed(`${p.name}: \`${bin} --version\` printed "${out.trim()}", not ${p.version}`);
    }
}

/** A strict NodeNext consumer that imports every entry must type-check against the published .d.ts files. */
async function checkTypes(project, expected) {
  const lines = expected.map(({ specifier }, i) => `import * as entry${i} from '${specifier}';`);
  lines.push(`export const entries: object[] = [${expected.map((_, i) => `entry${i}`).join(', ')}];`);
  await writeFile(join(project, 'consumer.ts'), `${lines.join('\n')}\n`);
  await writeFile(
    join(project, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        target: 'ES2022',
        strict: true,
        noEmit: true,
        types: ['node'],
        // Our .d.ts files are what is checked here: a type they name but do not depend on must show.
        skipLibCheck: false,
        skipDefaultLibCheck: true,
      },
      files: ['consumer.ts'],
    }),
  );
  await run(process.execPath, [tsc, '-p', project], { cwd: project, env: cleanEnv }).catch((error) => {
    throw new CheckFailed(
      `type-checking a consumer of the installed packages failed:\n${error.message.replace(/^.*\n/, '')}`,
    );
  });
}

async function main() {
  const packages = publicPackages();
  await run(process.execPath, [tsc, '-b', ...packages.map((p) => `packages/${p.dir}/tsconfig.build.json`)]);
  const work = await mkdtemp(join(tmpdir(), 'etch-packed-'));
  const removeWork = () => rmSync(work, { recursive: true, force: true });
  const onSignal = (signal) => {
    removeWork();
    process.kill(process.pid, signal);
  };
  process.once('SIGINT', onSignal).once('SIGTERM', onSignal);
  try {
    const project = join(work, 'consumer');
    await mkdir(project);
    const packed = await pack(packages, join(work, 'tarballs'));
    const expected = await expectedNames(packages);
    await install(project, packed);
    // Independent checks: run them together and report every failure, not just the first.
    const failures = (
      await Promise.allSettled([
        checkImports(project, expected),
        checkBin(project, packed),
        checkTypes(project, expected),
      ])
    ).flatMap((result) => (result.status === 'rejected' ? [result.reason] : []));
    if (failures.length)
      throw new CheckFailed(failures.map((e) => (e instanceof CheckFailed ? e.message : e.stack)).join('\n'));
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    console.log(
      `${packages.length} packed packages install with a strict layout, import (${expected.length} entries) and type-check (${seconds} s)`,
    );
  } finally {
    removeWork();
  }
}

main().catch((error) => {
  console.error(`check-packed: ${error instanceof CheckFailed ? error.message : error.stack}`);
  process.exitCode = 1;
});
