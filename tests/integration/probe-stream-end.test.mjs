// probe-stream-end.test.mjs — how a streamed answer ends. An answer is complete when the
// provider ended it with `data: [DONE]`, or with a finish_reason (some OpenAI-compatible servers
// send no [DONE]: the client then gets the [DONE] the wire format promises). On a context route
// a provider error event in the middle of the stream, a stream that stops with neither, or an
// event that cannot be read (not JSON, not strict UTF-8) ends the client's stream with an error
// event instead of [DONE], is logged 502, and leaves the conversation as it was. With "n" > 1 the
// provider streams the choices interleaved: only choice 0 is recorded. On a plain route a
// provider's error event is relayed as sent and ends the stream; a stream that stops with neither
// gets the gateway's error event, never a silent truncation. Found by the issue-6 verification
// (hostile upstream).
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { startFakeOpenAI } from '../fakes/openai.mjs';
import { startGateway, withLogs } from '../lib/gateway.mjs';
import { postJSON, rawRequest, sseData, waitFor } from '../lib/http.mjs';

let seq = 0;
const newConv = (tag) => `${tag}-${process.pid}-${++seq}`;

const chunk = (delta, index = 0) =>
  `data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index, delta, finish_reason: null }] })}\n\n`;
const finish = `data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] })}\n\n`;
const DONE = 'data: [DONE]\n\n';
const errorEvent = `data: ${JSON.stringify({ error: { message: 'The server had an error while processing your request.', type: 'server_error', param: null, code: null } })}\n\n`;

describe('the end of a streamed answer on a context route', () => {
  let fake;
  let gw;

  before(async () => {
    fake = await startFakeOpenAI();
    gw = await startGateway({
      workers: 1,
      manifests: `
apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: ctx}
spec:
  storage: {type: Memory}
---
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-probe-stream-end}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - {name: up, type: OpenAI, config: {endpoint: "${fake.baseURL}", modelName: up-model}}
  routes:
  - {name: ctx, pathPrefix: /ctx/v1, backends: [{target: up}], contextRef: {name: ctx}}
  - {name: plain, pathPrefix: /v1, backends: [{target: up}]}
  authentication: {type: None}
`,
    });
  });

  after(async () => {
    if (gw) await gw.stop();
    if (fake) await fake.close();
  });

  beforeEach(() => fake.reset());
  const logs = () => gw;

  /** One streamed turn on `path` whose upstream body is exactly `sse`: {res, events, line}. */
  async function turn(path, conv, sse, extra = {}) {
    fake.next({ sseBytes: sse });
    const res = await postJSON(
      `${gw.url}${path}/chat/completions`,
      { model: 'up', stream: true, stream_options: { include_usage: false }, messages: [{ role: 'user', content: 'hello' }], ...extra },
      { headers: { 'x-conversation-id': conv } }
    );
    assert.equal(res.status, 200, res.text);
    const id = res.headers['x-request-id'];
    const line = await waitFor(() => gw.accessLog().find((l) => l.request_id === id), { what: `the access-log line of ${id}` });
    return { res, events: sseData(res.text), line };
  }
  const stored = async (conv) => {
    const r = await rawRequest(`${gw.url}/v1/contexts/${conv}`);
    return r.status === 404 ? null : r.json.messages;
  };

  const refusals = [
    ['a provider error event after some text (no [DONE])', chunk({ role: 'assistant', content: 'half an ' }) + chunk({ content: 'answer' }) + errorEvent, 'upstream_error'],
    ['a provider error event, then [DONE]', chunk({ content: 'half' }) + errorEvent + DONE, 'upstream_error'],
    ['text, then the connection ends cleanly', chunk({ content: 'cut short' }), 'upstream_error'],
    ['an event that is not JSON', chunk({ content: 'a' }) + 'data: not json\n\n' + finish + DONE, 'invalid_upstream_response'],
    ['an event whose choices is not an array', chunk({ content: 'a' }) + 'data: {"choices":5}\n\n' + finish + DONE, 'invalid_upstream_response'],
    ['a delta whose content is a number', chunk({ content: 'a' }) + chunk({ content: 5 }) + finish + DONE, 'invalid_upstream_response'],
    ['an event with a lone surrogate escape', chunk({ content: 'a' }) + 'data: {"choices":[{"index":0,"delta":{"content":"\\udc00"}}]}\n\n' + finish + DONE, 'invalid_upstream_response'],
  ];
  for (const [what, sse, code] of refusals) {
    test(
      `${what}: error event instead of [DONE], logged 502, nothing recorded`,
      withLogs(logs, async () => {
        const conv = newConv('end');
        const { events, line } = await turn('/ctx/v1', conv, sse);
        assert.notEqual(events.at(-1), '[DONE]', 'no [DONE] on the provider\'s behalf');
        const err = JSON.parse(events.at(-1)).error;
        assert.equal(err.code, code, events.at(-1));
        assert.equal(err.type, 'server_error');
        assert.equal(line.status, 502, JSON.stringify(line));
        assert.equal(await stored(conv), null, 'the conversation was not created');
      })
    );
  }

  test(
    'invalid UTF-8 bytes in a streamed delta: refused, nothing recorded',
    withLogs(logs, async () => {
      const conv = newConv('utf8');
      const bad = Buffer.concat([
        Buffer.from(chunk({ content: 'a' })),
        Buffer.from('data: {"choices":[{"index":0,"delta":{"content":"'),
        Buffer.from([0xc0, 0xaf, 0xff]),
        Buffer.from('"}}]}\n\n' + finish + DONE),
      ]);
      const { events, line } = await turn('/ctx/v1', conv, bad);
      assert.equal(JSON.parse(events.at(-1)).error.code, 'invalid_upstream_response', events.at(-1));
      assert.equal(line.status, 502);
      assert.equal(await stored(conv), null);
    })
  );

  test(
    'an error event mid-stream on a turn of an existing conversation leaves its history as it was',
    withLogs(logs, async () => {
      const conv = newConv('keep');
      const first = await turn('/ctx/v1', conv, chunk({ content: 'first answer' }) + finish + DONE);
      assert.equal(first.events.at(-1), '[DONE]');
      const before = await stored(conv);
      assert.deepEqual(before.map((m) => [m.role, m.content]), [['user', 'hello'], ['assistant', 'first answer']]);
      const second = await turn('/ctx/v1', conv, chunk({ content: 'partial' }) + errorEvent);
      assert.equal(JSON.parse(second.events.at(-1)).error.code, 'upstream_error');
      assert.deepEqual(await stored(conv), before, 'the failed turn appended nothing');
    })
  );

  test(
    'n = 2: the choices arrive interleaved, only choice 0 is recorded',
    withLogs(logs, async () => {
      const conv = newConv('n2');
      const sse = chunk({ role: 'assistant', content: 'zero ' }, 0) + chunk({ role: 'assistant', content: 'one ' }, 1) + chunk({ content: 'answer' }, 0) + chunk({ content: 'other' }, 1) + finish + DONE;
      const { events } = await turn('/ctx/v1', conv, sse, { n: 2 });
      assert.equal(events.at(-1), '[DONE]');
      const msgs = await stored(conv);
      assert.deepEqual(msgs.map((m) => [m.role, m.content]), [['user', 'hello'], ['assistant', 'zero answer']]);
    })
  );

  test(
    'not streamed: the message content is recorded as the client got it (a string, null or content parts), anything else is refused',
    withLogs(logs, async () => {
      const answer = (content) => ({
        raw: {
          contentType: 'application/json',
          body: JSON.stringify({ id: 'x', object: 'chat.completion', created: 1, model: 'm', choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }] }),
        },
      });
      const ask = async (b) => {
        fake.next(b);
        const conv = newConv('whole');
        const res = await postJSON(`${gw.url}/ctx/v1/chat/completions`, { model: 'up', messages: [{ role: 'user', content: 'hello' }] }, { headers: { 'x-conversation-id': conv } });
        return { res, msgs: await stored(conv) };
      };
      for (const bad of [5, true, { text: 'x' }, [5], [{ text: 'no type' }]]) {
        const { res, msgs } = await ask(answer(bad));
        assert.equal(res.status, 502, `${JSON.stringify(bad)}: ${res.text}`);
        assert.equal(res.json.error.code, 'invalid_upstream_response');
        assert.equal(msgs, null, 'nothing recorded');
      }
      const parts = [{ type: 'text', text: 'in parts' }];
      const { res, msgs } = await ask(answer(parts));
      assert.equal(res.status, 200, res.text);
      assert.deepEqual(msgs[1].content, parts, 'the parts are recorded, not dropped to null');
    })
  );

  test(
    'a 2xx with an empty body to a streamed request is a 502 on either route, not an empty 200',
    withLogs(logs, async () => {
      for (const path of ['/v1', '/ctx/v1']) {
        for (const b of [{ status: 204, body: '' }, { raw: { contentType: 'text/event-stream', body: '' } }]) {
          fake.next(b);
          const conv = newConv('empty');
          const res = await postJSON(
            `${gw.url}${path}/chat/completions`,
            { model: 'up', stream: true, messages: [{ role: 'user', content: 'hello' }] },
            { headers: { 'x-conversation-id': conv } }
          );
          assert.equal(res.status, 502, `${path} ${JSON.stringify(b)}: ${res.text}`);
          assert.equal(res.json.error.code, 'invalid_upstream_response', res.text);
          assert.equal(await stored(conv), null);
        }
      }
    })
  );

  test(
    'text and finish_reason, but no [DONE]: complete, recorded, and the client gets the [DONE]',
    withLogs(logs, async () => {
      const conv = newConv('nodone');
      const { events, line } = await turn('/ctx/v1', conv, chunk({ content: 'whole ' }) + chunk({ content: 'answer' }) + finish);
      assert.equal(events.at(-1), '[DONE]');
      assert.equal(line.status, 200, JSON.stringify(line));
      const msgs = await stored(conv);
      assert.equal(msgs.at(-1).content, 'whole answer');
      const plain = await turn('/v1', newConv('plain'), chunk({ content: 'whole' }) + finish);
      assert.equal(plain.events.at(-1), '[DONE]');
      assert.equal(plain.line.status, 200);
    })
  );

  test(
    "a plain route relays a provider's error event as sent, and ends a stream cut without finish_reason or [DONE] with the gateway's error event",
    withLogs(logs, async () => {
      const { events, line } = await turn('/v1', newConv('plain'), chunk({ content: 'half' }) + errorEvent);
      assert.equal(events.length, 2);
      assert.deepEqual(JSON.parse(events.at(-1)), JSON.parse(errorEvent.slice(6)));
      assert.equal(line.status, 502);
      const cut = await turn('/v1', newConv('plain'), chunk({ content: 'cut' }));
      assert.equal(cut.events.length, 2, 'the text, then an error event: never a silent truncation');
      assert.equal(JSON.parse(cut.events.at(-1)).error.code, 'upstream_error');
      assert.equal(cut.line.status, 502);
    })
  );
});
