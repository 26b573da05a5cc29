import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));

test('the README example runs: the worker fills the buffer and the main thread waits for its write fence', () => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Example'));
  const code = /```js\n([\s\S]*?)```/.exec(section)?.[1];
  assert.ok(code, 'README has a js example under "## Example"');
  assert.ok(code.trimEnd().split('\n').length <= 20, 'the example stays within 20 lines');
  // Run it from inside the package so 'dmabuf/uapi' resolves by self-reference, as for a user.
  const dir = mkdtempSync(join(root, 'build-test', 'readme-'));
  try {
    const file = join(dir, 'example.mjs');
    writeFileSync(file, code);
    const out = execFileSync(process.execPath, [file], { cwd: root, encoding: 'utf8', timeout: 20_000 });
    assert.equal(out.trim(), 'worker wrote: 42 42');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
