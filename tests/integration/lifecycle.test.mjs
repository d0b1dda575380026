// lifecycle.test.mjs — the process around the gateway: `ctxgate validate` on the examples and on
// broken fixtures, `ctxgate serve` refusing a bad file, `ctxgate crds`, and SIGTERM letting
// requests in flight finish before a clean exit.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import YAML from 'yaml';

import { REPO_ROOT, metricSum, runCtxgate, startGateway, withLogs } from '../lib/gateway.mjs';
import { rawRequest, waitFor, within } from '../lib/http.mjs';

const FIXTURES = path.join(REPO_ROOT, 'tests', 'integration', 'fixtures');

function exampleDirs() {
  const out = [];
  const walk = (dir) => {
    const entries = fs.readdirSync(dir, { withFileTypes: true });
    if (entries.some((e) => e.isFile() && /\.(ya?ml|json)$/.test(e.name))) out.push(dir);
    for (const e of entries) if (e.isDirectory()) walk(path.join(dir, e.name));
  };
  walk(path.join(REPO_ROOT, 'examples'));
  return out.sort();
}

describe('ctxgate validate', () => {
  test('every example directory under examples/ is valid', async () => {
    const dirs = exampleDirs();
    assert.ok(
      dirs.some((d) => d.endsWith(path.join('examples', 'quickstart'))),
      `examples/quickstart is among the examples: ${dirs}`
    );
    for (const dir of dirs) {
      const r = await runCtxgate(['validate', dir]);
      assert.equal(r.code, 0, `ctxgate validate ${path.relative(REPO_ROOT, dir)} exited ${r.code}:\n${r.stderr}${r.stdout}`);
    }
  });

  test('a valid file exits 0', async () => {
    const r = await runCtxgate(['validate', path.join(FIXTURES, 'valid.yaml')]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
  });

  test('an unknown target type exits 1 with file:line: path: message', async () => {
    const file = path.join(FIXTURES, 'broken-type.yaml');
    const r = await runCtxgate(['validate', file]);
    assert.equal(r.code, 1, `exit status (stderr: ${r.stderr})`);
    const out = r.stderr + r.stdout;
    const m = /broken-type\.yaml:(\d+): (spec\.modelTargets\[0\]\.type): (.+)/.exec(out);
    assert.ok(m, `a file:line: path: message diagnostic: ${out}`);
    assert.equal(m[1], '11', 'the line of the bad field');
    assert.ok(m[3].trim().length > 0, 'a message follows');
    assert.match(m[3], /Bogus|Mock|OpenAI/, 'the message names the bad value or the allowed ones');
  });

  test('a backend naming a missing target exits 1 with file:line: path: message', async () => {
    const r = await runCtxgate(['validate', path.join(FIXTURES, 'broken-ref.yaml')]);
    assert.equal(r.code, 1, `exit status (stderr: ${r.stderr})`);
    const out = r.stderr + r.stdout;
    const m = /broken-ref\.yaml:(\d+): (spec\.routes\[0\]\.backends\[0\]\.target): (.+)/.exec(out);
    assert.ok(m, `a file:line: path: message diagnostic: ${out}`);
    assert.equal(m[1], '13');
    assert.match(m[3], /ghost/, 'the message names the missing target');
  });
});

describe('ctxgate serve on an invalid configuration', () => {
  test('exits 1 with the diagnostic and serves nothing', async () => {
    const file = path.join(FIXTURES, 'broken-type.yaml');
    const r = await runCtxgate(['serve', '-f', file, '--workers', '1'], { timeoutMs: 20000 });
    assert.equal(r.signal, null, 'it exits by itself (not killed at the time limit)');
    assert.equal(r.code, 1, `exit status (stderr: ${r.stderr})`);
    assert.match(r.stderr, /broken-type\.yaml:11: spec\.modelTargets\[0\]\.type: /);
  });
});

describe('ctxgate crds', () => {
  test('prints two CustomResourceDefinitions that parse as YAML', async () => {
    const r = await runCtxgate(['crds']);
    assert.equal(r.code, 0, r.stderr);
    const docs = YAML.parseAllDocuments(r.stdout);
    for (const d of docs) assert.deepEqual(d.errors, [], 'no YAML errors');
    const crds = docs.map((d) => d.toJS()).filter((x) => x !== null && x !== undefined);
    assert.equal(crds.length, 2, `two documents, got ${crds.length}`);
    const byKind = Object.fromEntries(crds.map((c) => [c.spec?.names?.kind, c]));
    assert.deepEqual(Object.keys(byKind).sort(), ['LLMGateway', 'ModelContextProtocol']);
    for (const [kind, short, plural] of [
      ['LLMGateway', 'llmgw', 'llmgateways'],
      ['ModelContextProtocol', 'mcp', 'modelcontextprotocols'],
    ]) {
      const c = byKind[kind];
      assert.equal(c.apiVersion, 'apiextensions.k8s.io/v1');
      assert.equal(c.kind, 'CustomResourceDefinition');
      assert.equal(c.spec.group, 'ctxgate.io');
      assert.equal(c.metadata.name, `${plural}.ctxgate.io`);
      assert.equal(c.spec.names.plural, plural);
      assert.ok(c.spec.names.shortNames.includes(short), `${kind} short name ${short}`);
      assert.equal(c.spec.scope, 'Namespaced');
      const v = c.spec.versions.find((x) => x.name === 'v1alpha1');
      assert.ok(v, 'version v1alpha1');
      assert.equal(v.served, true);
      assert.equal(v.storage, true);
      assert.ok(v.subresources && 'status' in v.subresources, '/status subresource');
      assert.equal(v.schema.openAPIV3Schema.type, 'object');
      assert.ok(v.schema.openAPIV3Schema.properties.spec, 'the schema describes spec');
    }
    const gwSpec = byKind.LLMGateway.spec.versions[0].schema.openAPIV3Schema.properties.spec;
    assert.ok(gwSpec.properties.modelTargets, 'LLMGateway spec.modelTargets is in the schema');
  });
});

describe('SIGTERM', () => {
  let gw;
  after(async () => {
    if (gw) await gw.stop();
  });

  test(
    'requests in flight finish, then the process exits 0',
    withLogs(
      () => gw,
      async () => {
        gw = await startGateway({
          manifests: `
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-term}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - name: slow
    type: Mock
    config: {mock: {text: slow but complete, latencyMs: 2500, chunks: 3}}
  routes:
  - name: main
    backends: [{target: slow}]
  authentication: {type: None}
`,
        });
        const client = new OpenAI({ baseURL: gw.baseURL, apiKey: 'x', maxRetries: 0, timeout: 60000 });
        const body = { model: 'slow', messages: [{ role: 'user', content: 'take your time' }] };
        const plain = client.chat.completions.create(body);
        const streamed = (async () => {
          let text = '';
          for await (const c of await client.chat.completions.create({ ...body, stream: true })) text += c.choices[0]?.delta?.content || '';
          return text;
        })();
        plain.catch(() => {});
        streamed.catch(() => {});
        await waitFor(
          async () => metricSum((await gw.metrics()).samples, 'ctxgate_requests_in_flight') >= 2,
          { what: 'two requests in flight' }
        );

        gw.proc.kill('SIGTERM');
        // the signal is handled asynchronously: poll until /readyz stops saying ready; while
        // draining it answers 503 draining, or nothing at all once the listeners are closed
        await waitFor(
          async () => {
            try {
              const r = await rawRequest(`${gw.url}/readyz`, { timeoutMs: 2000 });
              if (r.status === 200) return false;
              assert.equal(r.status, 503, `readyz while draining: ${r.text}`);
              assert.deepEqual(r.json, { status: 'draining' });
              return true;
            } catch (err) {
              if (err instanceof assert.AssertionError) throw err;
              return true; // refused: the listener is closed
            }
          },
          { timeoutMs: 10000, what: '/readyz to stop answering ready after SIGTERM' }
        );

        const [p, st] = await Promise.allSettled([
          within(plain, 30000, 'the in-flight request'),
          within(streamed, 30000, 'the in-flight stream'),
        ]);
        assert.equal(p.status, 'fulfilled', `the non-streamed request in flight completes: ${p.reason}`);
        assert.equal(p.value.choices[0].message.content, 'slow but complete');
        assert.equal(st.status, 'fulfilled', `the streamed request in flight completes: ${st.reason}`);
        assert.equal(st.value, 'slow but complete');
        const exit = await within(gw.exited, 30000, 'the process to exit');
        assert.deepEqual(exit, { code: 0, signal: null }, `exit after SIGTERM\n${gw.logs()}`);
      }
    )
  );

  test('SIGINT on an idle gateway exits 0', async () => {
    const g = await startGateway({
      manifests: `
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-int}
spec:
  listener: {port: __PORT__}
  modelTargets: [{name: m, type: Mock}]
  routes: [{name: main, backends: [{target: m}]}]
`,
    });
    try {
      const exit = await within(g.kill('SIGINT'), 30000, 'the process to exit');
      assert.deepEqual(exit, { code: 0, signal: null }, g.logs());
    } finally {
      await g.stop();
    }
  });
});
