// reload.test.mjs — configuration reloads: file rewrites under continuous load lose no request
// and take effect; a bad file is rejected with file:line: path diagnostics while the old
// configuration keeps serving; SIGHUP reloads; a port change keeps the old port.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

import { freePort, startGateway, withLogs } from '../lib/gateway.mjs';
import { rawRequest } from '../lib/http.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The document under test; `text` is the Mock answer, `type` lets a test break the file.
// The `type:` line of the first target is line TYPE_LINE of the file (1-based).
const manifest = ({ text, type = 'Mock', port = '__PORT__' }) => `apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-reload}
spec:
  listener: {port: ${port}}
  modelTargets:
  - name: m
    type: ${type}
    config:
      mock: {text: "${text}", chunks: 2}
  routes:
  - name: main
    backends: [{target: m}]
  authentication: {type: None}
`;
const TYPE_LINE = 8;

describe('reload', () => {
  let gw;
  let client;

  before(async () => {
    gw = await startGateway({ manifests: manifest({ text: 'version-0' }) });
    client = new OpenAI({ baseURL: gw.baseURL, apiKey: 'x', maxRetries: 0, timeout: 30000 });
  });

  after(async () => {
    if (gw) await gw.stop();
  });

  const logs = () => gw;
  const ask = async (stream = false) => {
    const body = { model: 'm', messages: [{ role: 'user', content: 'which version?' }] };
    if (!stream) return (await client.chat.completions.create(body)).choices[0].message.content;
    let text = '';
    for await (const c of await client.chat.completions.create({ ...body, stream: true })) text += c.choices[0]?.delta?.content || '';
    return text;
  };

  test(
    'rewrites under continuous load: no failed request, and each new text takes over',
    withLogs(logs, async () => {
      assert.equal(await ask(), 'version-0');
      let stop = false;
      const failures = [];
      const seen = new Set();
      let done = 0;
      const loop = async (k) => {
        for (let i = 0; !stop && i < 100000; i++) {
          try {
            const t = await ask((i + k) % 2 === 1);
            if (!/^version-\d$/.test(t)) failures.push(`unexpected answer ${JSON.stringify(t)}`);
            seen.add(t);
            done++;
          } catch (err) {
            failures.push(String(err && err.stack ? err.stack.split('\n')[0] : err));
          }
        }
      };
      const loops = [0, 1, 2, 3].map(loop);
      try {
        for (let v = 1; v <= 5; v++) {
          await sleep(300);
          const delta = await gw.reload(manifest({ text: `version-${v}` }), { expect: 'success' });
          assert.equal(delta.failure, 0, 'no reload failed');
          // a request that starts after the reload was counted sees the new text
          assert.equal(await ask(), `version-${v}`);
          assert.equal(await ask(true), `version-${v}`);
        }
        await sleep(300);
      } finally {
        stop = true;
        await Promise.all(loops);
      }
      assert.deepEqual(failures, [], `${failures.length} of ${done + failures.length} requests failed`);
      assert.ok(done > 20, `the load loops ran (${done} requests)`);
      assert.ok(seen.has('version-5'));
      assert.equal(await ask(), 'version-5');
    })
  );

  test(
    'a bad file is rejected: old config keeps serving, the log names file:line: path, a failure is counted',
    withLogs(logs, async () => {
      const before = await gw.reloadCounts();
      const current = await ask();
      const delta = await gw.reload(manifest({ text: 'never-served', type: 'NoSuchType' }), { expect: 'failure' });
      assert.ok(delta.failure >= 1);
      assert.equal(delta.success, 0, 'an invalid file is never applied');
      assert.equal(await ask(), current, 'the old configuration keeps serving');
      assert.equal(await ask(true), current);
      const diag = new RegExp(`gateway\\.yaml:${TYPE_LINE}: spec\\.modelTargets\\[0\\]\\.type: `);
      assert.match(gw.stderr(), diag, 'the diagnostic names file:line: path: message');
      const after = await gw.reloadCounts();
      assert.ok(after.failure > before.failure);
      // GET /admin/config says the last change was refused, and why
      const status = async () => (await rawRequest(`${gw.url}/admin/config`)).json;
      const refused = await status();
      assert.equal(refused.gateway, 'it-reload');
      assert.equal(refused.lastChange.result, 'rejected');
      assert.match(refused.lastChange.error, /gateway\.yaml: spec\.modelTargets\[0\]\.type: /);
      assert.ok(refused.lastChange.errors >= 1);

      // fixing the file brings the new configuration in
      await gw.reload(manifest({ text: 'fixed-after-bad' }), { expect: 'success' });
      assert.equal(await ask(), 'fixed-after-bad');
      const accepted = await status();
      assert.equal(accepted.lastChange.result, 'accepted');
      assert.equal(accepted.lastChange.error, undefined);
      assert.ok(accepted.generation > refused.generation, 'the served generation moves on');
    })
  );

  test(
    'a file rewritten in place (truncate + write) ends up applied',
    withLogs(logs, async () => {
      await gw.reload(manifest({ text: 'in-place' }), { inPlace: true, expect: 'success' });
      // editors write in several steps; the last reload must be the complete file
      await sleep(500);
      assert.equal(await ask(), 'in-place');
    })
  );

  test(
    'SIGHUP reloads',
    withLogs(logs, async () => {
      const before = await gw.reloadCounts();
      gw.proc.kill('SIGHUP');
      const delta = await gw.waitForReload(before, { expect: 'success' });
      assert.ok(delta.success >= 1);
      assert.equal(await ask(), 'in-place');
    })
  );

  test(
    'a listener.port change needs a restart: the old port keeps serving',
    withLogs(logs, async () => {
      const other = await freePort();
      await gw.reload(manifest({ text: 'port-change', port: other }));
      const h = await rawRequest(`${gw.url}/healthz`);
      assert.equal(h.status, 200, 'the old port still serves');
      await assert.rejects(rawRequest(`http://127.0.0.1:${other}/healthz`, { timeoutMs: 3000 }), 'the new port is not opened');
      assert.equal(gw.proc.exitCode, null, 'the process is still running');
    })
  );
});
