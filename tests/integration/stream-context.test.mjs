// stream-context.test.mjs — the answer relay on context routes, against the fake OpenAI upstream
// with no latency: concurrent streamed turns on one conversation (one wins, the other ends with a
// conversation_conflict event and is logged 409), request messages checked before any upstream
// call, wrong-kind or non-JSON upstream answers refused (502, nothing stored), tool-call deltas
// with bad indices refused, and X-Conversation-Id echoed on every answer.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { startFakeOpenAI } from '../fakes/openai.mjs';
import { startGateway, withLogs } from '../lib/gateway.mjs';
import { assertOpenAIError, postJSON, sseData, waitFor } from '../lib/http.mjs';

const KEY = 'sk-stream-ctx-0001';
let seq = 0;
const newConv = (tag) => `${tag}-${process.pid}-${++seq}`;

describe('the answer relay on context routes', () => {
  let fake;
  let gw;

  before(async () => {
    fake = await startFakeOpenAI();
    gw = await startGateway({
      workers: 1,
      manifests: `
apiVersion: v1
kind: Secret
metadata: {name: keys}
stringData: {k: ${KEY}}
---
apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: ctx}
spec:
  storage: {type: Memory}
  contextStrategy: {type: LastN, lastN: 20}
---
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-stream-ctx}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - name: smart
    type: OpenAI
    config: {endpoint: ${fake.baseURL}, modelName: gpt-4o-mini}
  routes:
  - name: main
    backends: [{target: smart}]
    contextRef: {name: ctx}
  - name: plain
    pathPrefix: /plain/v1
    backends: [{target: smart}]
  authentication:
    type: APIKey
    apiKeys:
    - {name: k, secretRef: {name: keys, key: k}}
`,
    });
  });

  after(async () => {
    if (gw) await gw.stop();
    if (fake) await fake.close();
  });

  beforeEach(() => fake.reset());
  const logs = () => gw;
  const auth = (conv, extra = {}) => ({
    headers: { authorization: `Bearer ${KEY}`, ...(conv ? { 'x-conversation-id': conv } : {}), ...extra },
  });
  const chat = (body, conv, url = `${gw.baseURL}/chat/completions`) => postJSON(url, body, auth(conv));
  const logLine = (id) =>
    waitFor(() => gw.accessLog().find((l) => l.request_id === id), { what: `the access-log line of ${id}` });
  const history = async (conv) => {
    const res = await postJSON(
      `${gw.baseURL}/chat/completions`,
      { model: 'smart', messages: [{ role: 'user', content: 'what was said?' }] },
      auth(conv)
    );
    assert.equal(res.status, 200, res.text);
    return { turns: res.headers['x-context-turns'], sent: fake.chatRequests().at(-1).body.messages };
  };

  test(
    'two concurrent streamed turns on one conversation: one is recorded, the other ends with conversation_conflict and is logged 409',
    withLogs(logs, async () => {
      let conflicts = 0;
      for (let round = 0; round < 10 && conflicts === 0; round++) {
        const conv = newConv('race');
        const ids = [`race-${round}-a-${process.pid}`, `race-${round}-b-${process.pid}`];
        const results = await Promise.all(
          ids.map((id, i) =>
            postJSON(
              `${gw.baseURL}/chat/completions`,
              { model: 'smart', stream: true, messages: [{ role: 'user', content: `racer ${i}` }] },
              auth(conv, { 'x-request-id': id })
            )
          )
        );
        for (let i = 0; i < 2; i++) {
          const res = results[i];
          assert.equal(res.status, 200, res.text);
          const events = sseData(res.text);
          const line = await logLine(ids[i]);
          if (events.at(-1) === '[DONE]') {
            assert.equal(line.status, 200, JSON.stringify(line));
            continue;
          }
          const err = JSON.parse(events.at(-1)).error;
          assert.equal(err.code, 'conversation_conflict', res.text);
          assert.equal(line.status, 409, `the conflict is logged as 409: ${JSON.stringify(line)}`);
          conflicts++;
        }
        assert.ok(conflicts <= 1, 'at most one of the two loses');
      }
      assert.equal(conflicts, 1, 'two turns raced on one conversation and one lost');
      assert.doesNotMatch(gw.stderr(), /AddressSanitizer|heap-use-after-free/);
    })
  );
  test(
    'bad message shapes on a context route are refused before any upstream call, naming the field (streamed or not)',
    withLogs(logs, async () => {
      const cases = [
        [{ role: 'hacker', content: 'hi' }, 'messages[1].role'],
        [{ role: 'user', content: 5 }, 'messages[1].content'],
        [{ role: 'assistant', content: 'x', tool_calls: 5 }, 'messages[1].tool_calls'],
        [{ role: 'user', content: 'hi', ts: 'x' }, 'messages[1].ts'],
        [{ role: 'tool', content: 'r', tool_call_id: 7 }, 'messages[1].tool_call_id'],
      ];
      for (const [bad, param] of cases) {
        for (const stream of [false, true]) {
          const conv = newConv('shape');
          const res = await chat(
            { model: 'smart', stream, messages: [{ role: 'user', content: 'fine' }, bad] },
            conv
          );
          const e = assertOpenAIError(assert, res, 400);
          assert.equal(e.type, 'invalid_request_error', res.text);
          assert.equal(e.param, param, res.text);
          assert.equal(res.headers['x-conversation-id'], conv, 'the error echoes X-Conversation-Id');
        }
      }
      assert.deepEqual(fake.requests, [], 'nothing reached the upstream');
    })
  );
  test(
    'every answer of a request with X-Conversation-Id echoes it: errors before and after the context stage, streams, plain routes',
    withLogs(logs, async () => {
      const conv = newConv('echo');
      const cases = [
        ['unknown model', { model: 'nope', messages: [{ role: 'user', content: 'x' }] }, {}, 404],
        ['upstream 500', { model: 'smart', messages: [{ role: 'user', content: 'x' }] }, { status: 500 }, 502],
        ['upstream 500, stream', { model: 'smart', stream: true, messages: [{ role: 'user', content: 'x' }] }, { status: 500 }, 502],
        ['ok, stream', { model: 'smart', stream: true, messages: [{ role: 'user', content: 'x' }] }, {}, 200],
      ];
      for (const url of [`${gw.baseURL}/chat/completions`, `${gw.url}/plain/v1/chat/completions`]) {
        for (const [what, body, behaviour, status] of cases) {
          if (status !== 404) fake.next(behaviour); // a 404 never reaches the upstream
          const res = await chat(body, conv, url);
          assert.equal(res.status, status, `${what} on ${url}: ${res.text}`);
          assert.equal(res.headers['x-conversation-id'], conv, `${what} on ${url} echoes X-Conversation-Id`);
        }
        fake.reset();
      }
      const unauth = await postJSON(`${gw.baseURL}/chat/completions`, { model: 'smart', messages: [{ role: 'user', content: 'x' }] }, {
        headers: { 'x-conversation-id': conv },
      });
      assert.equal(unauth.status, 401);
      assert.equal(unauth.headers['x-conversation-id'], conv, 'a 401 echoes it too');
      const bad = await chat({ model: 'smart', messages: [{ role: 'user', content: 'x' }] }, 'has space');
      const e = assertOpenAIError(assert, bad, 400, 'invalid_conversation');
      assert.equal(e.param, 'X-Conversation-Id');
      assert.equal(bad.headers['x-conversation-id'], undefined, 'an invalid id is not echoed');
    })
  );
  test(
    'non-JSON or wrong-kind upstream 200 answers get 502 invalid_upstream_response, and a context route stores nothing',
    withLogs(logs, async () => {
      const html = { contentType: 'text/html; charset=utf-8', body: '<html><body>Bad gateway page</body></html>' };
      const lyingHtml = { contentType: 'application/json', body: '<html>not json</html>' };
      const sse = { contentType: 'text/event-stream', body: 'data: {"choices":[]}\n\ndata: [DONE]\n\n' };
      const json = { contentType: 'application/json', body: '{"id":"x","object":"chat.completion","choices":[]}' };
      const lyingJson = { contentType: 'text/event-stream', body: '{"id":"x","object":"chat.completion"}' };
      const cases = [
        ['html', html, false, /Content-Type text\/html/],
        ['html labelled JSON', lyingHtml, false, /not JSON/],
        ['an event stream to a non-stream request', sse, false, /event stream/],
        ['JSON to a stream request', json, true, /instead of an event stream/],
        ['JSON labelled as an event stream to a stream request', lyingJson, true, /JSON body instead of an event stream/],
      ];
      for (const url of [`${gw.baseURL}/chat/completions`, `${gw.url}/plain/v1/chat/completions`]) {
        for (const [what, raw, stream, message] of cases) {
          const conv = newConv('kind');
          fake.next({ raw });
          const res = await chat({ model: 'smart', stream, messages: [{ role: 'user', content: `kind: ${what}` }] }, conv, url);
          const e = assertOpenAIError(assert, res, 502, 'invalid_upstream_response');
          assert.match(e.message, message, `${what}: ${res.text}`);
          assert.match(e.message, /smart/, 'the message names the target');
          if (url.includes('/plain/')) continue;
          const h = await history(conv);
          assert.equal(h.turns, '0', `${what}: nothing was recorded`);
        }
      }
      // a JSON object that is not a chat.completion cannot be recorded either
      const conv = newConv('kind');
      fake.next({ body: { hello: 'world' } });
      const res = await chat({ model: 'smart', messages: [{ role: 'user', content: 'not a completion' }] }, conv);
      const e = assertOpenAIError(assert, res, 502, 'invalid_upstream_response');
      assert.match(e.message, /choices\[0\]\.message/);
      assert.equal((await history(conv)).turns, '0');
    })
  );

  test(
    'a streamed tool-call delta with a bad index (or a call without id/type/name) is refused with an error event and stores nothing',
    withLogs(logs, async () => {
      const good = { index: 0, id: 'call_1', type: 'function', function: { name: 'lookup', arguments: '' } };
      const cases = [
        ['index -1', [[{ ...good, index: -1 }]]],
        ['index 129', [[{ ...good, index: 129 }]]],
        ['index "0"', [[{ ...good, index: '0' }]]],
        ['index 1.5', [[{ ...good, index: 1.5 }]]],
        ['no index', [[{ id: 'call_1', type: 'function', function: { name: 'lookup' } }]]],
        ['no id', [[{ index: 0, type: 'function', function: { name: 'lookup', arguments: '{}' } }]]],
        ['arguments before the call', [[{ index: 0, function: { arguments: '{}' } }]]],
        ['a later bad index', [[good], [{ index: 0, function: { arguments: '{"a":1}' } }], [{ index: -1, function: { arguments: 'x' } }]]],
      ];
      for (const [what, toolDeltas] of cases) {
        const conv = newConv('tool');
        const id = `tool-${process.pid}-${++seq}`;
        fake.next({ toolDeltas });
        const res = await postJSON(
          `${gw.baseURL}/chat/completions`,
          { model: 'smart', stream: true, messages: [{ role: 'user', content: `tools: ${what}` }] },
          auth(conv, { 'x-request-id': id })
        );
        if (res.status === 200) {
          const last = sseData(res.text).at(-1);
          assert.notEqual(last, '[DONE]', `${what}: the stream does not end well`);
          const err = JSON.parse(last).error;
          assert.equal(err.code, 'invalid_upstream_response', `${what}: ${res.text}`);
          assert.match(err.message, /tool call|tool-call/, err.message);
        } else {
          assertOpenAIError(assert, res, 502, 'invalid_upstream_response');
        }
        assert.equal((await logLine(id)).status, 502);
        assert.equal((await history(conv)).turns, '0', `${what}: nothing was recorded`);
      }
      // the well-formed call is recorded, arguments assembled
      const conv = newConv('tool');
      fake.next({ toolDeltas: [[good], [{ index: 0, function: { arguments: '{"order":' } }], [{ index: 0, function: { arguments: '"A-1"}' } }]] });
      const res = await chat({ model: 'smart', stream: true, messages: [{ role: 'user', content: 'tools ok' }] }, conv);
      assert.equal(sseData(res.text).at(-1), '[DONE]', res.text);
      const h = await history(conv);
      assert.equal(h.turns, '2');
      assert.deepEqual(h.sent[1], {
        role: 'assistant',
        content: null,
        tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'lookup', arguments: '{"order":"A-1"}' } }],
      });
      // non-stream: a tool call without an id is refused too
      const conv2 = newConv('tool');
      fake.next({
        body: {
          id: 'c',
          object: 'chat.completion',
          choices: [{ index: 0, message: { role: 'assistant', content: null, tool_calls: [{ type: 'function', function: { name: 'f', arguments: '{}' } }] } }],
        },
      });
      const whole = await chat({ model: 'smart', messages: [{ role: 'user', content: 'tools whole' }] }, conv2);
      const e = assertOpenAIError(assert, whole, 502, 'invalid_upstream_response');
      assert.match(e.message, /tool_calls\[0\] has no id/);
      assert.equal((await history(conv2)).turns, '0');
    })
  );
  test(
    'a tool-call index the gateway keeps as text (1.50, 1e999) is named as sent in the refusal',
    withLogs(logs, async () => {
      for (const index of ['1.50', '1e999']) {
        const conv = newConv('tool-raw');
        const chunk = (delta) => `data: {"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":${delta},"finish_reason":null}]}\n\n`;
        fake.next({
          sseBytes:
            chunk('{"role":"assistant","content":null}') +
            chunk(`{"tool_calls":[{"index":${index},"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]}`) +
            'data: [DONE]\n\n',
        });
        const res = await chat({ model: 'smart', stream: true, messages: [{ role: 'user', content: `raw index ${index}` }] }, conv);
        const last = sseData(res.text).at(-1);
        const err = JSON.parse(last).error;
        assert.equal(err.code, 'invalid_upstream_response', res.text);
        assert.ok(err.message.includes(`index ${index};`), err.message);
        assert.equal((await history(conv)).turns, '0');
      }
    })
  );
});
