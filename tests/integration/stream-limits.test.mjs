// stream-limits.test.mjs — big upstream answers against maxResponseBytes (16 MiB by default): a
// 50 MB answer (whole) and a 20 MB single SSE event, on a plain route and on a context route; a
// large answer under the limit is relayed as it arrives with backpressure (not held whole), the
// gateway keeps answering other requests meanwhile, and its memory stays bounded.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';

import { startFakeOpenAI } from '../fakes/openai.mjs';
import { startGateway, withLogs } from '../lib/gateway.mjs';
import { assertOpenAIError, postJSON, sseData, waitFor } from '../lib/http.mjs';

const MB = 1000 * 1000;
const MiB = 1024 * 1024;

/** VmRSS / VmHWM of a process, in bytes. */
function memory(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => Number(status.match(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm'))[1]) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

/**
 * A POST whose response is not read until resume(): {head (resolves with the response),
 * resume(), done (resolves with {status, text, complete})}.
 */
function pausedRequest(url, body, headers = {}) {
  const u = new URL(url);
  const payload = JSON.stringify(body);
  let resolveHead;
  const head = new Promise((r) => (resolveHead = r));
  const done = new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: u.hostname,
        port: u.port,
        path: u.pathname,
        method: 'POST',
        agent: false,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload), ...headers },
      },
      (r) => {
        r.pause();
        resolveHead(r);
        const chunks = [];
        let complete = false;
        r.on('data', (c) => chunks.push(c));
        r.on('end', () => (complete = true));
        r.on('error', () => {});
        r.on('close', () => resolve({ status: r.statusCode, headers: r.headers, text: Buffer.concat(chunks).toString('utf8'), complete: complete && !r.aborted }));
      }
    );
    req.on('error', reject);
    req.end(payload);
  });
  return { head, done, resume: () => head.then((r) => r.resume()) };
}

describe('big answers and maxResponseBytes', () => {
  let fake;
  let gw;
  let seq = 0;
  let baseline;

  before(async () => {
    fake = await startFakeOpenAI();
    gw = await startGateway({
      workers: 1,
      // ASan keeps freed memory in quarantine (256 MB by default); memory is measured here
      env: { ASAN_OPTIONS: `${process.env.ASAN_OPTIONS ? `${process.env.ASAN_OPTIONS}:` : ''}quarantine_size_mb=8` },
      manifests: `
apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: ctx}
spec:
  storage: {type: Memory}
---
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-limits}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - name: smart
    type: OpenAI
    config: {endpoint: ${fake.baseURL}, modelName: gpt-4o-mini}
  - name: roomy
    type: OpenAI
    config: {endpoint: ${fake.baseURL}, modelName: gpt-4o-mini, maxResponseBytes: 100000000}
  routes:
  - name: main
    backends: [{target: smart}, {target: roomy}]
  - name: ctx
    pathPrefix: /ctx/v1
    backends: [{target: smart}]
    contextRef: {name: ctx}
  authentication: {type: None}
`,
    });
    // warm up (tokenizer, pools), then take the baseline
    const r = await postJSON(`${gw.baseURL}/chat/completions`, { model: 'smart', messages: [{ role: 'user', content: 'warm up' }] });
    assert.equal(r.status, 200);
    baseline = memory(gw.proc.pid).rss;
  });

  after(async () => {
    if (gw) await gw.stop();
    if (fake) await fake.close();
  });

  beforeEach(() => fake.reset());
  const logs = () => gw;
  const url = (path = '/v1') => `${gw.url}${path}/chat/completions`;
  const logLine = (id) => waitFor(() => gw.accessLog().find((l) => l.request_id === id), { what: `the access-log line of ${id}` });
  const nextId = () => `limits-${process.pid}-${++seq}`;
  const turnsOf = async (conv) => {
    const res = await postJSON(url('/ctx/v1'), { model: 'smart', messages: [{ role: 'user', content: 'history?' }] }, { headers: { 'x-conversation-id': conv } });
    assert.equal(res.status, 200, res.text);
    return res.headers['x-context-turns'];
  };
  const smallRequestWorks = async () => {
    const res = await postJSON(url(), { model: 'smart', messages: [{ role: 'user', content: 'meanwhile' }] });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.choices[0].message.content, 'reply to: meanwhile');
  };

  test(
    'a 50 MB answer under the limit is relayed as it arrives: a paused client holds it back (backpressure), other requests are answered, memory stays bounded, usage comes from its end',
    withLogs(logs, async () => {
      const id = nextId();
      fake.next({ bigBytes: 50 * MB, noLength: true });
      const p = pausedRequest(url(), { model: 'roomy', messages: [{ role: 'user', content: 'big' }] }, { 'x-request-id': id });
      const head = await p.head;
      assert.equal(head.statusCode, 200);
      assert.match(head.headers['content-type'], /^application\/json/);
      // the client reads nothing: the gateway must not read the whole answer meanwhile
      await new Promise((r) => setTimeout(r, 300));
      await smallRequestWorks();
      const rec = fake.chatRequests().find((r) => r.bigSent !== undefined);
      assert.ok(rec.bigSent < 50 * MB, `the upstream is held back while the client does not read (sent ${rec.bigSent})`);
      p.resume();
      const res = await p.done;
      assert.ok(res.complete, 'the whole answer arrived');
      assert.equal(res.text.length, rec.bigSent);
      const doc = JSON.parse(res.text);
      assert.equal(doc.choices[0].message.content.length, 50 * MB);
      const line = await logLine(id);
      assert.equal(line.status, 200);
      assert.equal(line.completion_tokens, 50 * MB, 'usage read from the end of the relayed body');
      assert.equal(line.usage_source, 'upstream');
      const m = memory(gw.proc.pid);
      assert.ok(m.hwm - baseline < 64 * MiB, `peak RSS grew by ${(m.hwm - baseline) / MiB} MiB relaying 50 MB`);
    })
  );

  test(
    'plain route, 50 MB over maxResponseBytes: 502 naming it when the length is announced; a broken body when it is not',
    withLogs(logs, async () => {
      fake.next({ bigBytes: 50 * MB });
      const res = await postJSON(url(), { model: 'smart', messages: [{ role: 'user', content: 'too big' }] });
      assert.equal(res.status, 502, res.text.slice(0, 300)); // never print 50 MB
      const e = assertOpenAIError(assert, res, 502, 'upstream_response_too_large');
      assert.match(e.message, /maxResponseBytes \(16777216 bytes\)/);
      await smallRequestWorks();

      const id = nextId();
      fake.next({ bigBytes: 50 * MB, noLength: true });
      const p = pausedRequest(url(), { model: 'smart', messages: [{ role: 'user', content: 'too big, no length' }] }, { 'x-request-id': id });
      p.resume();
      const r = await p.done;
      assert.equal(r.status, 200, 'the head went out with the first 256 KiB');
      assert.equal(r.complete, false, 'the body is broken off, not ended as if complete');
      assert.ok(r.text.length <= 16 * MiB, `at most maxResponseBytes reached the client (${r.text.length})`);
      const line = await logLine(id);
      assert.equal(line.status, 502);
      assert.match(line.error, /maxResponseBytes/);
      await smallRequestWorks();
    })
  );

  test(
    'context route, 50 MB answer: 502 before anything is sent (with or without a length), nothing stored',
    withLogs(logs, async () => {
      for (const noLength of [false, true]) {
        const conv = `limits-ctx-${process.pid}-${++seq}`;
        fake.next({ bigBytes: 50 * MB, noLength });
        const res = await postJSON(url('/ctx/v1'), { model: 'smart', messages: [{ role: 'user', content: 'big turn' }] }, { headers: { 'x-conversation-id': conv } });
        assert.equal(res.status, 502, res.text.slice(0, 300)); // never print 50 MB
        const e = assertOpenAIError(assert, res, 502, 'upstream_response_too_large');
        assert.match(e.message, /maxResponseBytes/);
        assert.equal(res.headers['x-conversation-id'], conv);
        await smallRequestWorks();
        assert.equal(await turnsOf(conv), '0', 'nothing was recorded');
      }
    })
  );

  test(
    'a 20 MB SSE event without a blank line: the stream ends with an error event (plain and context routes)',
    withLogs(logs, async () => {
      for (const path of ['/v1', '/ctx/v1']) {
        const conv = `limits-ev-${process.pid}-${++seq}`;
        const id = nextId();
        fake.next({ bigEvent: 20 * MB });
        const res = await postJSON(
          url(path),
          { model: 'smart', stream: true, messages: [{ role: 'user', content: 'one huge event' }] },
          { headers: { 'x-request-id': id, 'x-conversation-id': conv } }
        );
        assert.equal(res.status, 200, res.text.slice(0, 300));
        const events = sseData(res.text);
        const last = JSON.parse(events.at(-1).slice(0, 100000).startsWith('{"error"') ? events.at(-1) : '{}');
        assert.equal(last.error?.code, 'upstream_response_too_large', events.at(-1).slice(0, 300));
        assert.match(last.error.message, /1048576 bytes/);
        assert.ok(res.text.length < 2 * MiB, 'the huge event was not forwarded');
        assert.equal((await logLine(id)).status, 502);
        await smallRequestWorks();
        if (path === '/ctx/v1') assert.equal(await turnsOf(conv), '0');
      }
    })
  );

  test(
    'a 50 MB stream: it ends with an error event at maxResponseBytes (plain and context routes); a context route stores nothing',
    withLogs(logs, async () => {
      for (const path of ['/v1', '/ctx/v1']) {
        const conv = `limits-st-${process.pid}-${++seq}`;
        const id = nextId();
        fake.next({ streamBytes: 50 * MB });
        const res = await postJSON(
          url(path),
          { model: 'smart', stream: true, messages: [{ role: 'user', content: 'a long stream' }] },
          { headers: { 'x-request-id': id, 'x-conversation-id': conv } }
        );
        assert.equal(res.status, 200);
        const events = sseData(res.text);
        const last = JSON.parse(events.at(-1));
        assert.equal(last.error.code, 'upstream_response_too_large');
        assert.match(last.error.message, /maxResponseBytes \(16777216 bytes\)/);
        assert.ok(events.length > 100, 'the stream was relayed up to the limit');
        assert.equal((await logLine(id)).status, 502);
        await smallRequestWorks();
        if (path === '/ctx/v1') assert.equal(await turnsOf(conv), '0');
      }
      const m = memory(gw.proc.pid);
      assert.ok(m.hwm - baseline < 96 * MiB, `peak RSS grew by ${(m.hwm - baseline) / MiB} MiB`);
    })
  );
});
