// Each package's tsconfig references must equal its workspace dependencies, or `tsc -b` builds in the
// wrong order (or not at all) while pnpm links fine: the drift would only show on a clean clone.
//
// Layout: a public package builds `dist` from tsconfig.build.json (its sources without the tests; references:
// the build configs of its workspace `dependencies`) and type-checks its tests with tsconfig.json (no output;
// references: its own build config and those of all its workspace dependencies, dev ones included). A private
// package has one tsconfig.json. Between them the two configs must cover every source file exactly once.
import { readdirSync, readFileSync, existsSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import ts from 'typescript';

const root = new URL('..', import.meta.url).pathname;
const dirs = readdirSync(join(root, 'packages')).filter((dir) =>
  existsSync(join(root, 'packages', dir, 'package.json')),
);
const manifests = new Map(
  dirs.map((dir) => [dir, JSON.parse(readFileSync(join(root, 'packages', dir, 'package.json'), 'utf8'))]),
);
const nameToDir = new Map([...manifests].map(([dir, pkg]) => [pkg.name, dir]));
const isTest = (file) => /\.test\./.test(file);
const problems = [];

/** The config `tsc -b` uses for a package that another one depends on. */
const buildConfigOf = (dir) =>
  manifests.get(dir).private ? `packages/${dir}/tsconfig.json` : `packages/${dir}/tsconfig.build.json`;

/** Workspace packages among some dependency fields, as the config paths a reference to them must name. */
function workspaceRefs(pkg, fields) {
  return fields
    .flatMap((field) => Object.entries(pkg[field] ?? {}))
    .filter(([, range]) => String(range).startsWith('workspace:'))
    .map(([name]) => buildConfigOf(nameToDir.get(name)));
}

/** A config file parsed as tsc reads it (comments allowed, `extends` followed, globs expanded). */
function parse(file) {
  const { config, error } = ts.readConfigFile(join(root, file), ts.sys.readFile);
  if (error) throw new Error(`${file}: ${ts.flattenDiagnosticMessageText(error.messageText, '\n')}`);
  const parsed = ts.parseJsonConfigFileContent(config, ts.sys, join(root, file, '..'), undefined, join(root, file));
  // A reference may name a folder (meaning its tsconfig.json) or a file: compare them as files.
  const refs = (parsed.projectReferences ?? []).map((ref) => {
    const path = statSync(ref.path, { throwIfNoEntry: false })?.isDirectory()
      ? join(ref.path, 'tsconfig.json')
      : ref.path;
    return relative(root, path);
  });
  return { refs, files: parsed.fileNames.map((f) => relative(root, resolve(f))) };
}

function expectRefs(file, actual, wanted) {
  const a = [...new Set(actual)].sort();
  const w = [...new Set(wanted)].sort();
  if (JSON.stringify(a) !== JSON.stringify(w))
    problems.push(`${file}: references ${JSON.stringify(a)} but the dependencies say ${JSON.stringify(w)}`);
}

/** Every TypeScript source file under a package's src. */
function sources(dir) {
  return readdirSync(join(root, 'packages', dir, 'src'), { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && /\.[cm]?tsx?$/.test(e.name) && !e.name.endsWith('.d.ts'))
    .map((e) => relative(root, join(e.parentPath, e.name)));
}

for (const [dir, pkg] of manifests) {
  const where = `packages/${dir}`;
  if (pkg.private) {
    const { refs } = parse(`${where}/tsconfig.json`);
    expectRefs(`${where}/tsconfig.json`, refs, workspaceRefs(pkg, ['dependencies', 'devDependencies']));
    continue;
  }
  if (!existsSync(join(root, where, 'tsconfig.build.json'))) {
    problems.push(`${where}: a public package needs a tsconfig.build.json that builds dist without the tests`);
    continue;
  }
  for (const name of Object.keys(pkg.dependencies ?? {}))
    if (manifests.get(nameToDir.get(name))?.private)
      problems.push(`${where}: depends at run time on the private ${name}, which a consumer cannot install`);
  const build = parse(`${where}/tsconfig.build.json`);
  const test = parse(`${where}/tsconfig.json`);
  const runtimeFields = ['dependencies', 'peerDependencies', 'optionalDependencies'];
  expectRefs(`${where}/tsconfig.build.json`, build.refs, workspaceRefs(pkg, runtimeFields));
  expectRefs(`${where}/tsconfig.json`, test.refs, [
    `${where}/tsconfig.build.json`,
    ...workspaceRefs(pkg, [...runtimeFields, 'devDependencies']),
  ]);
  for (const file of build.files.filter(isTest)) problems.push(`${where}/tsconfig.build.json: builds the test ${file}`);
  for (const file of test.files.filter((f) => !isTest(f)))
    problems.push(`${where}/tsconfig.json: compiles ${file}, which is not a test (tsconfig.build.json owns it)`);
  const covered = new Set([...build.files, ...test.files]);
  for (const file of sources(dir))
    if (!covered.has(file)) problems.push(`${where}: ${file} is in neither tsconfig.build.json nor tsconfig.json`);
}

const rootRefs = parse('tsconfig.json').refs;
expectRefs(
  'tsconfig.json',
  rootRefs,
  dirs.map((dir) => `packages/${dir}/tsconfig.json`),
);

if (problems.length) {
  for (const problem of problems) console.error(problem);
  process.exit(1);
}
console.log(`tsconfig references match workspace dependencies in ${dirs.length} packages; tests stay out of dist`);
