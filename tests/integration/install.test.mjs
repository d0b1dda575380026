// install.test.mjs — a ctxgate that runs outside the checkout: `cmake --install` lays out
// PREFIX/bin/ctxgate with the tokenizer's rank files in PREFIX/share/ctxgate/tokenizer, and the
// installed binary, started from elsewhere with nothing else copied, answers a TokenBudget
// context route with exact token counts. A binary copied alone, with no rank files anywhere it
// looks, is refused at start (validate exits 1, serve does not start) with a message saying
// where it looked and how to fix it — not a 500 at the first request.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { freePort, gatewayBinary, runCtxgate, startGateway, withLogs } from '../lib/gateway.mjs';
import { postJSON } from '../lib/http.mjs';
import { chatPromptTokens } from '../lib/tokens.mjs';

// no lookup through the environment: only what the binary finds from its own location
const NO_ENV = { CTXGATE_TOKENIZER_DIR: undefined, CTXGATE_DATA_DIR: undefined };

// TokenBudget over two Mock targets whose models use both encodings (o200k_base, cl100k_base)
const manifests = `apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: conv}
spec:
  contextStrategy: {type: TokenBudget, maxContextTokens: 2000}
---
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-install}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - {name: m, type: Mock, config: {modelName: gpt-4o, mock: {text: "installed"}}}
  - {name: legacy, type: Mock, config: {modelName: gpt-4, mock: {text: "installed"}}}
  routes:
  - {name: main, backends: [{target: m}], contextRef: {name: conv}, match: {models: [m]}}
  - {name: old, backends: [{target: legacy}], contextRef: {name: conv}}
`;

describe('installed binary', () => {
  let tmp;
  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ctxgate-install-'));
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  test('cmake --install, then the installed binary alone serves a TokenBudget route', async () => {
    const buildDir = path.dirname(gatewayBinary());
    assert.ok(fs.existsSync(path.join(buildDir, 'CMakeCache.txt')), `${buildDir} is a CMake build tree`);
    const prefix = path.join(tmp, 'prefix');
    const r = spawnSync('cmake', ['--install', buildDir, '--prefix', prefix], { encoding: 'utf8' });
    assert.equal(r.status, 0, `cmake --install failed\n${r.stdout}${r.stderr}`);
    const bin = path.join(prefix, 'bin', 'ctxgate');
    for (const f of ['o200k_base.tiktoken', 'cl100k_base.tiktoken'])
      assert.ok(fs.statSync(path.join(prefix, 'share', 'ctxgate', 'tokenizer', f)).size > 1e6, `${f} installed`);

    let gw;
    try {
      gw = await startGateway({ manifests, bin, cwd: prefix, env: NO_ENV, workers: 1 });
      await withLogs(
        () => gw,
        async () => {
          for (const model of ['m', 'legacy']) {
            const messages = [{ role: 'user', content: `hello from ${model}` }];
            const headers = { 'x-conversation-id': `install-${model}` };
            const res = await postJSON(`${gw.baseURL}/chat/completions`, { model, messages }, { headers });
            assert.equal(res.status, 200, `${model}: ${res.text}`);
            assert.equal(res.json.choices[0].message.content, 'installed');
            const again = await postJSON(`${gw.baseURL}/chat/completions`, { model, messages }, { headers });
            assert.equal(again.status, 200, `${model} with history: ${again.text}`);
          }
          // exact counts (the rank files were loaded), not the ceil(bytes/4) estimate
          const messages = [{ role: 'user', content: 'count these tokens exactly, please' }];
          const res = await postJSON(`${gw.baseURL}/chat/completions`, { model: 'm', messages });
          assert.equal(res.json.usage.prompt_tokens, chatPromptTokens(messages));
          assert.doesNotMatch(gw.stderr(), /estimate|not found/);
        }
      )();
    } finally {
      if (gw) await gw.stop();
    }
  });

  test('a binary copied alone with no rank files: validate exits 1 and serve refuses to start', async () => {
    const binDir = path.join(tmp, 'alone', 'bin'); // nothing in alone/: no share/, no node_modules/
    fs.mkdirSync(binDir, { recursive: true });
    const bin = path.join(binDir, 'ctxgate');
    fs.copyFileSync(gatewayBinary(), bin);
    fs.chmodSync(bin, 0o755);
    const empty = path.join(tmp, 'empty-data');
    fs.mkdirSync(empty);
    const cfgDir = path.join(tmp, 'config');
    fs.mkdirSync(cfgDir);
    fs.writeFileSync(path.join(cfgDir, 'gw.yaml'), manifests.replace('__PORT__', String(await freePort())));
    const env = { ...NO_ENV, CTXGATE_DATA_DIR: empty };

    const v = await runCtxgate(['validate', cfgDir], { bin, cwd: tmp, env });
    assert.equal(v.code, 1, v.stdout + v.stderr);
    const line = v.stdout.split('\n').find((l) => l.includes('spec.routes[0].contextRef'));
    assert.ok(line, v.stdout);
    assert.match(line, /contextStrategy\.type TokenBudget, which counts tokens in o200k_base/);
    assert.ok(line.includes(`${empty}/tokenizer/o200k_base.tiktoken`), `names CTXGATE_DATA_DIR's place: ${line}`);
    assert.ok(line.includes(`${binDir}/../share/ctxgate/tokenizer/o200k_base.tiktoken`), `names the install place: ${line}`);
    assert.match(line, /cmake --install/, 'says how to fix it');
    assert.match(v.stdout, /cl100k_base/, 'the second encoding is reported as well');

    const s = await runCtxgate(['serve', '-f', cfgDir, '--workers', '1'], { bin, cwd: tmp, env, timeoutMs: 20000 });
    assert.notEqual(s.signal, 'SIGKILL', 'serve exited by itself instead of serving');
    assert.notEqual(s.code, 0);
    assert.match(s.stderr, /spec\.routes\[0\]\.contextRef: .*o200k_base\.tiktoken not found; looked in /);
  });

  test('without rank files a Mock-only gateway starts with a warning, and a reload adding TokenBudget is refused', async () => {
    const bin = path.join(tmp, 'alone', 'bin', 'ctxgate'); // copied by the previous test
    const env = { ...NO_ENV, CTXGATE_DATA_DIR: path.join(tmp, 'empty-data') };
    const mockOnly = `apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-install}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - {name: m, type: Mock, config: {mock: {text: "old"}}}
`;
    let gw;
    try {
      gw = await startGateway({ manifests: mockOnly, bin, cwd: tmp, env, workers: 1 });
      await withLogs(
        () => gw,
        async () => {
          assert.match(gw.stderr(), /spec\.modelTargets\[0\]\.type: Mock usage figures will be estimates .*not found; looked in /);
          const delta = await gw.reload(manifests, { expect: 'failure' });
          assert.equal(delta.success, 0, 'the configuration that needs the missing files is not applied');
          assert.match(gw.stderr(), /spec\.routes\[0\]\.contextRef: .*o200k_base\.tiktoken not found/);
          const res = await postJSON(`${gw.baseURL}/chat/completions`, { model: 'm', messages: [{ role: 'user', content: 'hi' }] });
          assert.equal(res.status, 200, res.text);
          assert.equal(res.json.choices[0].message.content, 'old', 'the previous configuration keeps serving');
        }
      )();
    } finally {
      if (gw) await gw.stop();
    }
  });
});
