// failover-retry.test.mjs — failover.maxAttempts counts every upstream attempt: the plan is the
// chosen target, then the failover targets in order, starting over when maxAttempts is larger
// (so a route without failover targets retries its one target); the pause before attempt n+1 is
// "equal jitter" over backoffMs·2^(n-1); Retry-After (seconds or HTTP-date) from the failed
// answer is honoured, and one longer than the limit (30 s, or the target's timeouts.total) is not
// waited for: the 429/503 goes to the client with its Retry-After. Each retry is logged with its
// reason (the upstream 5xx/429 with Retry-After rows of issue 6's fault matrix).
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { openaiErrorBody, startFakeOpenAI } from '../fakes/openai.mjs';
import { freePort, startGateway, withLogs } from '../lib/gateway.mjs';
import { assertOpenAIError, postJSON, waitFor } from '../lib/http.mjs';

const chatBody = (model, extra = {}) => ({ model, messages: [{ role: 'user', content: 'hello upstream' }], ...extra });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

describe('failover: retries, backoff with jitter, Retry-After', () => {
  let fakeA;
  let fakeB;
  let fakeC;
  let gw;
  let seq = 0;

  before(async () => {
    fakeA = await startFakeOpenAI();
    fakeB = await startFakeOpenAI();
    fakeC = await startFakeOpenAI();
    const deadPort = await freePort(); // nothing listens there
    gw = await startGateway({
      manifests: `
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-failover}
spec:
  listener: {port: __PORT__}
  modelTargets:
  # these tests count attempts through many failures: outlier detection (outlier.test.mjs) must
  # not eject the targets between them
  - {name: a, type: OpenAI, config: {endpoint: "${fakeA.baseURL}", modelName: a-model}, healthCheck: {unhealthyAfter: 100000}}
  - {name: b, type: OpenAI, config: {endpoint: "${fakeB.baseURL}", modelName: b-model}, healthCheck: {unhealthyAfter: 100000}}
  - {name: c, type: OpenAI, config: {endpoint: "${fakeC.baseURL}", modelName: c-model}, healthCheck: {unhealthyAfter: 100000}}
  - name: short
    type: OpenAI
    config: {endpoint: "${fakeA.baseURL}", modelName: short-model, timeouts: {connect: 5, firstToken: 3, total: 3}}
    healthCheck: {unhealthyAfter: 100000}
  - name: slow
    type: OpenAI
    config: {endpoint: "${fakeA.baseURL}", modelName: slow-model, timeouts: {connect: 5, firstToken: 1, total: 60}}
    healthCheck: {unhealthyAfter: 100000}
  - name: dead
    type: OpenAICompatible
    config: {endpoint: "http://127.0.0.1:${deadPort}/v1", modelName: dead-model, timeouts: {connect: 2}}
    healthCheck: {unhealthyAfter: 100000}
  routes:
  - name: single
    pathPrefix: /single/v1
    backends: [{target: a}, {target: short}]
    failover: {maxAttempts: 3, backoffMs: 10}
  - name: chain
    pathPrefix: /chain/v1
    backends: [{target: a}]
    failover: {targets: [b, c], maxAttempts: 5, backoffMs: 10}
  - name: jitter
    pathPrefix: /jitter/v1
    backends: [{target: a}]
    failover: {maxAttempts: 4, backoffMs: 300}
  - name: reasons
    pathPrefix: /reasons/v1
    backends: [{target: dead}, {target: slow}]
    failover: {targets: [b], maxAttempts: 2, backoffMs: 10}
  authentication: {type: None}
`,
    });
  });

  after(async () => {
    if (gw) await gw.stop();
    for (const f of [fakeA, fakeB, fakeC]) if (f) await f.close();
  });

  beforeEach(() => {
    for (const f of [fakeA, fakeB, fakeC]) f.reset();
  });

  const logs = () => gw;

  // Sends one chat request with its own X-Request-Id; returns the response and that id.
  async function chat(prefix, model, extra) {
    const id = `fo-${process.pid}-${++seq}`;
    const res = await postJSON(`${gw.url}${prefix}/chat/completions`, chatBody(model, extra), { headers: { 'x-request-id': id } });
    return { res, id };
  }

  // The gateway's log lines about request id (they are written before the answer is sent).
  async function logLines(id, n) {
    for (let i = 0; i < 500; i++) {
      const lines = gw.stderr().split('\n').filter((l) => l.includes(`request ${id}:`));
      if (lines.length >= n) return lines;
      await sleep(20);
    }
    return gw.stderr().split('\n').filter((l) => l.includes(`request ${id}:`));
  }

  // "retrying on 'x' in N ms" → N
  const waits = (lines) => lines.map((l) => /retrying on '[^']+' in (\d+) ms/.exec(l)).filter(Boolean).map((m) => Number(m[1]));
  const gaps = (reqs) => reqs.slice(1).map((r, i) => r.receivedAt - reqs[i].receivedAt);

  test(
    'one target answering 503, 503, 200 with maxAttempts 3 → 200 after 3 upstream requests',
    withLogs(logs, async () => {
      fakeA.next({ status: 503 }, { status: 503 });
      const { res, id } = await chat('/single/v1', 'a');
      assert.equal(res.status, 200, res.text);
      assert.equal(res.json.choices[0].message.content, 'reply to: hello upstream');
      assert.equal(fakeA.chatRequests().length, 3);
      for (const r of fakeA.chatRequests()) assert.equal(r.body.model, 'a-model');
      const lines = await logLines(id, 2);
      assert.equal(lines.length, 2, lines.join('\n'));
      assert.match(lines[0], /attempt 1 on target 'a' failed \(HTTP 503\); retrying on 'a' in \d+ ms/);
      assert.match(lines[1], /attempt 2 on target 'a' failed \(HTTP 503\); retrying on 'a' in \d+ ms/);
    })
  );

  test(
    'streamed: the same target is retried before any byte went to the client',
    withLogs(logs, async () => {
      fakeA.next({ status: 500 });
      const { res } = await chat('/single/v1', 'a', { stream: true });
      assert.equal(res.status, 200, res.text);
      assert.match(res.headers['content-type'], /^text\/event-stream/);
      assert.match(res.text, /data: \[DONE\]/);
      assert.equal(fakeA.chatRequests().length, 2);
    })
  );

  test(
    'maxAttempts exhausted → the last error goes to the client, no more upstream requests',
    withLogs(logs, async () => {
      fakeA.next(
        { status: 503, body: openaiErrorBody(503, 'first failure') },
        { status: 500, body: openaiErrorBody(500, 'second failure') },
        { status: 503, body: openaiErrorBody(503, 'third failure') }
      );
      const { res, id } = await chat('/single/v1', 'a');
      const e = assertOpenAIError(assert, res, 502, 'upstream_error');
      assert.match(e.message, /third failure/);
      assert.equal(fakeA.chatRequests().length, 3);
      const lines = await logLines(id, 3);
      assert.match(lines[1], /attempt 2 on target 'a' failed \(HTTP 500\); retrying on 'a'/);
      assert.match(lines[2], /attempt 3 on target 'a' failed \(HTTP 503\); no attempts left \(maxAttempts 3\)/);
    })
  );

  test(
    'the plan: chosen target, then failover targets in order, then over again (A, B, C, A, B)',
    withLogs(logs, async () => {
      fakeA.next({ status: 500 }, { status: 502 });
      fakeB.next({ status: 503 });
      fakeC.next({ status: 429 });
      const { res, id } = await chat('/chain/v1', 'a');
      assert.equal(res.status, 200, res.text);
      const all = [...fakeA.chatRequests(), ...fakeB.chatRequests(), ...fakeC.chatRequests()].sort((x, y) => x.receivedAt - y.receivedAt);
      assert.deepEqual(
        all.map((r) => r.body.model),
        ['a-model', 'b-model', 'c-model', 'a-model', 'b-model']
      );
      const lines = await logLines(id, 4);
      assert.deepEqual(
        lines.map((l) => /failed \(([^)]*)\); retrying on '([^']+)'/.exec(l)?.slice(1, 3).join(' → ')),
        ['HTTP 500 → b', 'HTTP 503 → c', 'HTTP 429 → a', 'HTTP 502 → b']
      );
    })
  );

  test(
    'backoff: equal jitter, the n-th pause within [d/2, d] for d = backoffMs·2^(n-1)',
    withLogs(logs, async () => {
      fakeA.next({ status: 503 }, { status: 503 }, { status: 503 });
      const { res, id } = await chat('/jitter/v1', 'a');
      assert.equal(res.status, 200, res.text);
      const reqs = fakeA.chatRequests();
      assert.equal(reqs.length, 4);
      const w = waits(await logLines(id, 3));
      assert.equal(w.length, 3);
      const bounds = [
        [150, 300],
        [300, 600],
        [600, 1200],
      ];
      const g = gaps(reqs);
      for (let i = 0; i < 3; i++) {
        const [lo, hi] = bounds[i];
        assert.ok(w[i] >= lo && w[i] <= hi, `pause ${i + 1} is ${w[i]} ms, expected within [${lo}, ${hi}]`);
        // the requests really are that far apart (timers never fire early; generous upper
        // margin for a loaded machine)
        assert.ok(g[i] >= w[i] - 30, `gap ${i + 1} between upstream requests ${g[i].toFixed(0)} ms ≥ pause ${w[i]} ms`);
        assert.ok(g[i] <= hi + 2000, `gap ${i + 1} ${g[i].toFixed(0)} ms is not far beyond ${hi} ms`);
      }
    })
  );

  test(
    'Retry-After in seconds is honoured (503, Retry-After: 1, backoffMs 10)',
    withLogs(logs, async () => {
      fakeA.next({ status: 503, headers: { 'retry-after': '1' } });
      const { res, id } = await chat('/single/v1', 'a');
      assert.equal(res.status, 200, res.text);
      const reqs = fakeA.chatRequests();
      assert.equal(reqs.length, 2);
      const [gap] = gaps(reqs);
      assert.ok(gap >= 970, `second request ${gap.toFixed(0)} ms after the first, Retry-After asked for 1 s`);
      const lines = await logLines(id, 1);
      assert.match(lines[0], /attempt 1 on target 'a' failed \(HTTP 503, Retry-After: 1\); retrying on 'a' in 1\d\d\d ms/);
    })
  );

  test(
    'Retry-After as an HTTP-date is honoured (429)',
    withLogs(logs, async () => {
      const t0 = Date.now();
      const when = Math.ceil((t0 + 1500) / 1000) * 1000; // a whole second, 1.5–2.5 s ahead
      fakeA.next({ status: 429, headers: { 'retry-after': new Date(when).toUTCString() } });
      const { res } = await chat('/single/v1', 'a');
      assert.equal(res.status, 200, res.text);
      const reqs = fakeA.chatRequests();
      assert.equal(reqs.length, 2);
      const [gap] = gaps(reqs);
      // the first request reached the fake shortly after t0; the second not before `when`
      assert.ok(gap >= when - t0 - 700, `second request ${gap.toFixed(0)} ms after the first; the date was ${when - t0} ms ahead`);
    })
  );

  test(
    'Retry-After longer than 30 s → no retry: the 503 goes to the client with Retry-After',
    withLogs(logs, async () => {
      fakeA.next({ status: 503, headers: { 'retry-after': '120' } });
      const { res, id } = await chat('/single/v1', 'a');
      const e = assertOpenAIError(assert, res, 503, 'upstream_overloaded');
      assert.equal(res.headers['retry-after'], '120');
      assert.match(e.message, /Retry-After: 120/);
      assert.equal(fakeA.chatRequests().length, 1);
      const lines = await logLines(id, 1);
      assert.match(lines[0], /attempt 1 on target 'a' failed \(HTTP 503, Retry-After: 120\); not retrying/);
    })
  );

  test(
    'Retry-After longer than 30 s on a 429 → the 429 with Retry-After',
    withLogs(logs, async () => {
      fakeA.next({ status: 429, headers: { 'retry-after': '45' } });
      const { res } = await chat('/single/v1', 'a');
      assertOpenAIError(assert, res, 429, 'rate_limit_exceeded');
      assert.equal(res.headers['retry-after'], '45');
      assert.equal(fakeA.chatRequests().length, 1);
    })
  );

  test(
    "Retry-After longer than the target's timeouts.total (3 s) → no retry",
    withLogs(logs, async () => {
      fakeA.next({ status: 503, headers: { 'retry-after': '5' } });
      const { res } = await chat('/single/v1', 'short');
      assertOpenAIError(assert, res, 503, 'upstream_overloaded');
      assert.equal(res.headers['retry-after'], '5');
      assert.equal(fakeA.chatRequests().length, 1);
    })
  );

  test(
    'the log names the reason: connect failed, timeout',
    withLogs(logs, async () => {
      const dead = await chat('/reasons/v1', 'dead');
      assert.equal(dead.res.status, 200, dead.res.text);
      const [d] = await logLines(dead.id, 1);
      assert.match(d, /attempt 1 on target 'dead' failed \(connect failed\b.*\); retrying on 'b' in \d+ ms/);

      fakeA.next({ delayMs: 2500 });
      const slow = await chat('/reasons/v1', 'slow');
      assert.equal(slow.res.status, 200, slow.res.text);
      const [s] = await logLines(slow.id, 1);
      assert.match(s, /attempt 1 on target 'slow' failed \(timeout\b.*\); retrying on 'b' in \d+ ms/);
      assert.equal(fakeB.chatRequests().length, 2);
    })
  );
  test(
    'a retried stream inherits nothing from the failed attempt: usage dropped before it timed out is not recorded',
    withLogs(logs, async () => {
      // attempt 1: the usage-only chunk the gateway asked for (dropped for a client that did not
      // ask for usage, so nothing reaches the client), then silence until timeouts.total (3 s)
      const usageChunk = { id: 'c', object: 'chat.completion.chunk', model: 'short-model', choices: [], usage: { prompt_tokens: 999, completion_tokens: 999, total_tokens: 1998 } };
      fakeA.next({ sseBytes: `data: ${JSON.stringify(usageChunk)}\n\n`, sseHang: true });
      // attempt 2: a normal stream whose provider ignores the usage the gateway asked for
      fakeA.next({ omitUsage: true });
      const { res, id } = await chat('/single/v1', 'short', { stream: true });
      assert.equal(res.status, 200, res.text);
      assert.ok(res.text.includes('data: [DONE]'), res.text);
      assert.ok(!res.text.includes('999'), res.text);
      assert.equal(fakeA.chatRequests().length, 2);
      // the access-log line follows the answer's last byte; a sanitised build on a busy machine
      // may take a while to write it
      const line = await waitFor(() => gw.stdout().split('\n').find((l) => l.includes(`"request_id":"${id}"`)), {
        timeoutMs: 15000,
        intervalMs: 20,
        what: `the access-log line of ${id}`,
      });
      const entry = JSON.parse(line);
      assert.equal(entry.attempts, 2);
      // no usage came with the answer the client got (docs/observability.md: `none`)
      assert.equal(entry.usage_source, 'none', line);
      assert.equal(entry.prompt_tokens, 0, line);
      assert.equal(entry.completion_tokens, 0, line);
    })
  );
});
