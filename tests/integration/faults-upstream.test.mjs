// faults-upstream.test.mjs — the upstream fault matrix: a provider that resets the connection
// before the response head, after it, in the middle of a JSON body, inside an SSE event and
// inside a multi-byte UTF-8 character; and a provider that stalls before its first byte or in
// the middle of a stream. For streamed and non-streamed requests, on a plain route and on a
// context route (Memory store). Each time the client gets a clear error in OpenAI's format
// (non-stream: 502/504 JSON; a stream that already started: a last `data: {"error":...}` event,
// never a silent truncation nor a [DONE]), the access log and the metrics record the failure,
// nothing is stored for the conversation, the stalled upstream connection is closed, and the
// gateway keeps serving.
//
// Run it against both builds: CTXGATE_BIN=build/ctxgate and CTXGATE_BIN=build-asan/ctxgate.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { startFakeOpenAI } from '../fakes/openai.mjs';
import { metricSum, sanitizerReports, startGateway, withLogs } from '../lib/gateway.mjs';
import { assertOpenAIError, postJSON, rawRequest, sseData, waitFor, within } from '../lib/http.mjs';
import { startBlackhole } from '../lib/servers.mjs';

const MCP = 'conv';
// Multi-byte characters early in the text, so a cut "inside a UTF-8 character" cuts one
const UTF8_TEXT = 'héllo wörld ünïcode ☃ snow 雪 more words after';
const ASCII_TEXT = 'alpha beta gamma delta epsilon zeta eta theta';

let seq = 0;
const nextId = (tag) => `faults-${tag}-${process.pid}-${++seq}`;

/**
 * Checks a failed answer: a JSON error with `status` (non-stream, or a stream that failed before
 * its first byte), or — for a stream that had started — status 200, complete events only, and a
 * last event that is an OpenAI error, without [DONE]. Returns {kind: 'json'|'event', error, data}.
 */
function assertFailure(res, { stream, status = 502, codes, allowJSON = true, allowEvent = stream }) {
  if (res.status !== 200) {
    assert.ok(allowJSON, `a JSON error was not expected here, got ${res.status}: ${res.text}`);
    const e = assertOpenAIError(assert, res, status);
    if (codes) assert.ok(codes.includes(e.code), `error.code in ${codes}, got ${e.code}: ${res.text}`);
    assert.match(res.headers['content-type'] || '', /^application\/json/);
    return { kind: 'json', error: e, data: [] };
  }
  assert.ok(allowEvent, `expected a ${status} JSON error, got 200: ${res.text}`);
  assert.match(res.headers['content-type'] || '', /^text\/event-stream/, `a started stream: ${res.text}`);
  const data = sseData(res.text);
  assert.ok(data.length > 0, `the stream is not empty: ${JSON.stringify(res.text)}`);
  assert.ok(!data.includes('[DONE]'), `no [DONE] after an error: ${res.text}`);
  // every event that reached the client is a whole JSON event: no half event forwarded
  const events = data.map((d) => {
    try {
      return JSON.parse(d);
    } catch {
      assert.fail(`an incomplete or broken event was forwarded: ${JSON.stringify(d)}\nbody: ${JSON.stringify(res.text)}`);
    }
    return null;
  });
  assert.ok(!res.text.includes('\ufffd'), `no replacement character (a split UTF-8 sequence) reached the client: ${res.text}`);
  const last = events[events.length - 1];
  assert.ok(last && last.error && typeof last.error === 'object', `the last event is an error: ${res.text}`);
  assert.equal(typeof last.error.message, 'string');
  assert.ok(last.error.message.length > 0);
  assert.equal(typeof last.error.type, 'string');
  if (codes) assert.ok(codes.includes(last.error.code), `error.code in ${codes}, got ${last.error.code}: ${res.text}`);
  for (const ev of events.slice(0, -1)) assert.ok(!ev.error, `only the last event is an error: ${res.text}`);
  return { kind: 'event', error: last.error, data: events.slice(0, -1) };
}

const deltaText = (events) => events.map((e) => e.choices?.[0]?.delta?.content ?? '').join('');

describe('upstream faults', () => {
  let fake;
  let hole;
  let gw;
  const logs = () => gw;

  before(async () => {
    fake = await startFakeOpenAI();
    hole = await startBlackhole(); // connects there never complete
    gw = await startGateway({
      manifests: `
apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: ${MCP}}
spec:
  storage: {type: Memory}
  contextStrategy: {type: LastN, lastN: 20}
---
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-faults}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - name: up
    type: OpenAI
    config: {endpoint: "${fake.baseURL}", modelName: up-model, timeouts: {connect: 5, firstToken: 30, total: 60}}
  - name: slow
    type: OpenAI
    config: {endpoint: "${fake.baseURL}", modelName: slow-model, timeouts: {connect: 5, firstToken: 1, total: 60}}
  - name: short
    type: OpenAI
    config: {endpoint: "${fake.baseURL}", modelName: short-model, timeouts: {connect: 5, firstToken: 30, total: 2}}
  - name: hole
    type: OpenAICompatible
    config: {endpoint: "http://127.0.0.1:${hole.port}/v1", modelName: hole-model, timeouts: {connect: 1, firstToken: 30, total: 60}}
  routes:
  - name: plain
    pathPrefix: /v1
    backends: [{target: up}, {target: slow}, {target: short}, {target: hole}]
  - name: ctx
    pathPrefix: /ctx/v1
    backends: [{target: up}, {target: slow}, {target: short}, {target: hole}]
    contextRef: {name: ${MCP}}
  authentication: {type: None}
`,
    });
  });

  after(async () => {
    if (gw) await gw.stop();
    if (fake) await fake.close();
    if (hole) await hole.close();
  });

  beforeEach(() => fake.reset());

  const ROUTES = [
    { name: 'plain', prefix: '/v1', context: false },
    { name: 'ctx', prefix: '/ctx/v1', context: true },
  ];

  /** One chat request; on a context route with a fresh conversation id. */
  async function ask(route, model, { stream = false, conv, requestId, content = 'hello upstream' } = {}) {
    const headers = { 'x-request-id': requestId || nextId('rid') };
    if (route.context) headers['x-conversation-id'] = conv;
    const body = { model, messages: [{ role: 'user', content }] };
    if (stream) body.stream = true;
    return postJSON(`${gw.url}${route.prefix}/chat/completions`, body, { headers, timeoutMs: 30000 });
  }

  async function upstreamErrors(target) {
    return metricSum((await gw.metrics()).samples, 'ctxgate_upstream_errors_total', { target });
  }

  /** ctxgate_requests_total of a route, by status: {"200": n, "502": m, ...}. */
  async function requestsWith(routeName) {
    const out = {};
    for (const x of (await gw.metrics()).samples) {
      if (x.name === 'ctxgate_requests_total' && x.labels.route === routeName) out[x.labels.status] = (out[x.labels.status] || 0) + x.value;
    }
    return out;
  }

  /** The access-log line of a request (by its X-Request-Id), once it was written. */
  function accessLine(requestId) {
    return waitFor(() => gw.accessLog().find((l) => l.request_id === requestId), {
      timeoutMs: 10000,
      what: `the access-log line of request ${requestId}`,
    });
  }

  /** Nothing is stored for `conv`: the context API does not know it. */
  async function assertNothingStored(conv) {
    const r = await rawRequest(`${gw.url}/v1/contexts/${encodeURIComponent(conv)}?mcp=${MCP}`);
    assert.equal(r.status, 404, `no conversation ${conv} stored after a failed turn: ${r.text}`);
    assertOpenAIError(assert, r, 404, 'conversation_not_found');
  }

  /** The gateway still serves the route; on a context route the next turn starts from nothing. */
  async function assertStillServing(route, conv) {
    const res = await ask(route, 'up', { conv, content: 'are you still there' });
    assert.equal(res.status, 200, `the gateway keeps serving: ${res.text}`);
    assert.equal(res.json.choices[0].message.content, 'reply to: are you still there');
    if (route.context) {
      assert.equal(res.headers['x-context-turns'], '0', 'the failed turn left no history');
      const r = await rawRequest(`${gw.url}/v1/contexts/${encodeURIComponent(conv)}?mcp=${MCP}`);
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(
        r.json.messages.map((m) => [m.role, m.content]),
        [
          ['user', 'are you still there'],
          ['assistant', 'reply to: are you still there'],
        ],
        'only the successful turn is stored'
      );
    }
  }

  // name, the fake's behaviour (every attempt: an HTTP client may retry a request whose reused
  // connection died before the head), stream, and what the client must see
  const RESETS = [
    { name: 'reset before the response head', b: { destroy: true, rst: true }, stream: false, expect: 'json' },
    { name: 'reset before the response head', b: { destroy: true, rst: true }, stream: true, expect: 'json' },
    { name: 'reset right after the response head', b: { cutBody: 'head', rst: true }, stream: false, expect: 'json' },
    // the client's stream starts with the first body byte, not with the head (docs/gateway.md,
    // Streaming): before it, a failure is an ordinary JSON error, and failover could still run
    { name: 'reset right after the response head', b: { cutBody: 'head', rst: true }, stream: true, expect: 'json' },
    { name: 'reset in the middle of the JSON body', b: { cutBody: 'half', rst: true }, stream: false, expect: 'json' },
    {
      name: 'reset inside a UTF-8 character of the JSON body',
      b: { cutBody: 'utf8', rst: true, text: UTF8_TEXT },
      stream: false,
      expect: 'json',
    },
    {
      name: 'reset inside an SSE event',
      b: { cutAfterChunks: 2, cutInside: 'event', rst: true, text: ASCII_TEXT },
      stream: true,
      expect: 'event',
      before: 'alpha beta',
    },
    {
      name: 'close (FIN) inside an SSE event',
      b: { cutAfterChunks: 2, cutInside: 'event', text: ASCII_TEXT },
      stream: true,
      expect: 'event',
      before: 'alpha beta',
    },
    {
      name: 'reset inside a UTF-8 character of an SSE event',
      b: { cutAfterChunks: 1, cutInside: 'utf8', rst: true, text: UTF8_TEXT },
      stream: true,
      expect: 'event',
      before: 'héllo',
    },
    {
      name: 'close (FIN) inside a UTF-8 character of an SSE event',
      b: { cutAfterChunks: 1, cutInside: 'utf8', text: UTF8_TEXT },
      stream: true,
      expect: 'event',
      before: 'héllo',
    },
  ];

  for (const route of ROUTES) {
    describe(`${route.name} route`, () => {
      for (const c of RESETS) {
        test(
          `${c.name}, ${c.stream ? 'streamed' : 'non-streamed'} → a clear error, recorded, nothing stored`,
          withLogs(logs, async (t) => {
            fake.setDefault(c.b);
            const conv = nextId('conv');
            const requestId = nextId('rid');
            const errorsBefore = await upstreamErrors('up');
            const requestsBefore = await requestsWith(route.name);
            const res = await ask(route, 'up', { stream: c.stream, conv, requestId });
            const f = assertFailure(res, {
              stream: c.stream,
              status: 502,
              allowJSON: c.expect !== 'event',
              allowEvent: c.expect !== 'json',
            });
            t.diagnostic(`the client saw ${f.kind === 'json' ? `a ${res.status} JSON error` : 'an error event'}: ${f.error.code}: ${f.error.message}`);
            if (c.before !== undefined) assert.equal(deltaText(f.data), c.before, 'the complete events before the cut arrived');
            assert.ok(fake.chatRequests().length >= 1, 'the provider was called');

            const line = await accessLine(requestId);
            // a stream that had started is logged with the outcome (502), not the 200 of its head
            assert.equal(line.status, f.kind === 'json' ? res.status : 502, `access log status: ${JSON.stringify(line)}`);
            assert.equal(typeof line.error, 'string', `the access log records the error: ${JSON.stringify(line)}`);
            assert.ok(line.error.length > 0);
            assert.equal(line.route, route.name);
            assert.ok((await upstreamErrors('up')) > errorsBefore, 'ctxgate_upstream_errors_total{target="up"} grew');
            // the metrics count it with the status the access log shows
            const requestsAfter = await requestsWith(route.name);
            assert.equal(
              (requestsAfter[line.status] || 0) - (requestsBefore[line.status] || 0),
              1,
              `ctxgate_requests_total{route="${route.name}",status="${line.status}"} grew by one: ${JSON.stringify(requestsAfter)}`
            );

            fake.setDefault({});
            if (route.context) await assertNothingStored(conv);
            await assertStillServing(route, conv);
          })
        );
      }

      test(
        'stall before the first byte (timeouts.firstToken), non-streamed and streamed → 504, upstream closed',
        withLogs(logs, async () => {
          for (const stream of [false, true]) {
            fake.reset();
            fake.next({ hang: true });
            const conv = nextId('conv');
            const requestId = nextId('rid');
            const res = await ask(route, 'slow', { stream, conv, requestId });
            assertFailure(res, { stream, status: 504, codes: ['upstream_timeout'], allowEvent: false });
            const up = fake.chatRequests()[0];
            assert.ok(up, 'the provider was called');
            await within(up.closed, 10000, 'the gateway to close the stalled upstream connection');
            assert.equal(up.clientClosedEarly, true);
            const line = await accessLine(requestId);
            assert.equal(line.status, 504);
            assert.equal(typeof line.error, 'string');
            if (route.context) await assertNothingStored(conv);
            await assertStillServing(route, conv);
          }
        })
      );

      test(
        'connect that never completes (timeouts.connect), non-streamed and streamed → a clear JSON error',
        withLogs(logs, async (t) => {
          for (const stream of [false, true]) {
            const conv = nextId('conv');
            const requestId = nextId('rid');
            const before = metricSum((await gw.metrics()).samples, 'ctxgate_upstream_errors_total', { target: 'hole' });
            const res = await ask(route, 'hole', { stream, conv, requestId });
            const f = assertFailure(res, { stream, status: res.status === 504 ? 504 : 502, allowEvent: false });
            t.diagnostic(`${stream ? 'streamed' : 'non-streamed'}: ${res.status} ${f.error.code}: ${f.error.message}`);
            // today 502 upstream_unavailable (docs/gateway.md: "provider unreachable"); nginx
            // answers a connect timeout with 504: either is a clear answer
            assert.ok([502, 504].includes(res.status), `502 or 504: ${res.text}`);
            assert.ok(['upstream_unavailable', 'upstream_timeout'].includes(f.error.code), res.text);
            assert.match(f.error.message, /connect/i, 'the message says the connection could not be made');
            const line = await accessLine(requestId);
            assert.equal(line.status, res.status);
            const after = (await gw.metrics()).samples;
            assert.ok(metricSum(after, 'ctxgate_upstream_errors_total', { target: 'hole' }) > before);
            assert.ok(metricSum(after, 'ctxgate_upstream_errors_total', { target: 'hole', kind: 'connect' }) > 0, 'counted as kind="connect"');
            if (route.context) await assertNothingStored(conv);
            await assertStillServing(route, conv);
          }
        })
      );

      test(
        'stall in the middle of a stream (timeouts.total) → an upstream_timeout error event, upstream closed',
        withLogs(logs, async () => {
          fake.next({ stallAfterChunks: 2, text: ASCII_TEXT });
          const conv = nextId('conv');
          const requestId = nextId('rid');
          const res = await ask(route, 'short', { stream: true, conv, requestId });
          const f = assertFailure(res, { stream: true, codes: ['upstream_timeout'], allowJSON: false });
          assert.equal(deltaText(f.data), 'alpha beta');
          const up = fake.chatRequests()[0];
          await within(up.closed, 10000, 'the gateway to close the stalled upstream connection');
          assert.equal(up.clientClosedEarly, true);
          const line = await accessLine(requestId);
          assert.equal(line.status, 502, JSON.stringify(line));
          assert.equal(typeof line.error, 'string', JSON.stringify(line));
          if (route.context) await assertNothingStored(conv);
          await assertStillServing(route, conv);
        })
      );

      test(
        'stall in the middle of a JSON body (timeouts.total) → 504 upstream_timeout, upstream closed',
        withLogs(logs, async () => {
          fake.next({ stallBody: true });
          const conv = nextId('conv');
          const requestId = nextId('rid');
          const res = await ask(route, 'short', { stream: false, conv, requestId });
          assertFailure(res, { stream: false, status: 504, codes: ['upstream_timeout'] });
          const up = fake.chatRequests()[0];
          await within(up.closed, 10000, 'the gateway to close the stalled upstream connection');
          assert.equal(up.clientClosedEarly, true);
          const line = await accessLine(requestId);
          assert.equal(line.status, 504);
          if (route.context) await assertNothingStored(conv);
          await assertStillServing(route, conv);
        })
      );
    });
  }

  // Answers that end early or are not chat completions, though the HTTP exchange itself is fine.
  describe('answers that look complete at the HTTP level', () => {
    for (const route of ROUTES) {
      test(
        `${route.name} route: a stream whose body ends cleanly after 2 events, without finish_reason or [DONE] → an error event, nothing stored`,
        withLogs(logs, async () => {
          fake.next({ endAfterChunks: 2, text: ASCII_TEXT });
          const conv = nextId('conv');
          const requestId = nextId('rid');
          const res = await ask(route, 'up', { stream: true, conv, requestId });
          const f = assertFailure(res, { stream: true, allowJSON: false });
          assert.equal(deltaText(f.data), 'alpha beta');
          const line = await accessLine(requestId);
          assert.equal(typeof line.error, 'string', JSON.stringify(line));
          if (route.context) await assertNothingStored(conv);
          await assertStillServing(route, conv);
        })
      );
    }

    test(
      'context route: a 200 whose body is not a chat completion → 502, and no user turn is stored without its answer',
      withLogs(logs, async () => {
        const route = ROUTES.find((r) => r.context);
        for (const body of ['this is not json', { object: 'chat.completion', choices: [] }]) {
          fake.next({ body });
          const conv = nextId('conv');
          const res = await ask(route, 'up', { conv });
          const r = await rawRequest(`${gw.url}/v1/contexts/${encodeURIComponent(conv)}?mcp=${MCP}`);
          assert.ok(
            !(r.status === 200 && r.json.messages.length === 1),
            `a user message stored without its answer (${JSON.stringify(body)} answered ${res.status}): ${r.text}`
          );
          assertOpenAIError(assert, res, 502);
          assert.equal(r.status, 404, `nothing stored: ${r.text}`);
        }
      })
    );
  });

  test(
    'after the whole matrix the gateway is healthy and nothing is in flight',
    withLogs(logs, async () => {
      const h = await rawRequest(`${gw.url}/healthz`);
      assert.equal(h.status, 200);
      await waitFor(async () => metricSum((await gw.metrics()).samples, 'ctxgate_requests_in_flight') === 0, {
        what: 'no request in flight',
      });
      const r = await rawRequest(`${gw.url}/v1/contexts?mcp=${MCP}&limit=1000`);
      assert.equal(r.status, 200, r.text);
      // only the successful follow-up turns were stored: every stored conversation has 2 messages
      for (const c of r.json.data) assert.equal(c.turns, 2, `conversation ${c.id}: ${JSON.stringify(c)}`);
      assert.equal(gw.proc.exitCode, null, 'still running');
    })
  );

  test(
    'SIGTERM afterwards: exit 0, and (ASan build) no sanitizer report',
    withLogs(logs, async () => {
      const exit = await within(gw.kill('SIGTERM'), 60000, 'the gateway to exit');
      assert.deepEqual(exit, { code: 0, signal: null }, gw.logs());
      assert.equal(sanitizerReports(gw.stderr()), '', 'no AddressSanitizer/LeakSanitizer/UBSan report');
    })
  );
});
