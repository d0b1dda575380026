// stream-usage.test.mjs — token usage of streamed answers the client did not ask usage for: the
// gateway asks the OpenAI-family upstream for it (stream_options.include_usage, spliced into the
// client's bytes), strips what the client would not have got (the usage-only chunk, usage: null),
// and logs where the counts come from (usage_source upstream / counted / none).
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { startFakeOpenAI } from '../fakes/openai.mjs';
import { metricSum, startGateway, withLogs } from '../lib/gateway.mjs';
import { postJSON, rawRequest, sseData, waitFor } from '../lib/http.mjs';

describe('usage of streamed answers', () => {
  let fake;
  let gw;
  let seq = 0;

  before(async () => {
    fake = await startFakeOpenAI();
    gw = await startGateway({
      manifests: `
apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: ctx}
spec:
  storage: {type: Memory}
---
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-stream-usage}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - name: gpt-4o-mini
    type: OpenAI
    config: {endpoint: ${fake.baseURL}}
    pricing: {inputPerMillion: 1000, outputPerMillion: 2000}
  routes:
  - name: main
    backends: [{target: gpt-4o-mini}]
  - name: ctx
    pathPrefix: /ctx/v1
    backends: [{target: gpt-4o-mini}]
    contextRef: {name: ctx}
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
  const logLine = (id) =>
    waitFor(() => gw.accessLog().find((l) => l.request_id === id), { what: `the access-log line of ${id}` });
  const labels = { gateway: 'it-stream-usage', route: 'main', model: 'gpt-4o-mini' };

  async function stream(body, { path = '/v1', conv } = {}) {
    const id = `usage-${process.pid}-${++seq}`;
    const res = await postJSON(`${gw.url}${path}/chat/completions`, body, {
      headers: { 'x-request-id': id, ...(conv ? { 'x-conversation-id': conv } : {}) },
    });
    assert.equal(res.status, 200, res.text);
    const events = sseData(res.text);
    assert.equal(events.at(-1), '[DONE]', res.text);
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
    return { res, chunks, line: await logLine(id), up: fake.chatRequests().at(-1) };
  }

  test(
    'a stream without include_usage: the upstream is asked for usage, the client gets no usage chunk, the log and metrics get the tokens',
    withLogs(logs, async () => {
      const before = await gw.metrics();
      const { chunks, line, up } = await stream({
        model: 'gpt-4o-mini',
        stream: true,
        messages: [{ role: 'user', content: 'count my tokens please' }],
      });
      assert.deepEqual(up.body.stream_options, { include_usage: true });
      assert.equal(up.sentChunks, chunks.length + 1, 'only the usage-only chunk was held back');
      for (const c of chunks) {
        assert.ok(!('usage' in c), `no usage field reaches the client: ${JSON.stringify(c)}`);
        assert.ok(c.choices.length > 0, 'no usage-only chunk');
      }
      assert.equal(chunks.map((c) => c.choices[0].delta.content ?? '').join(''), 'reply to: count my tokens please');
      assert.equal(line.prompt_tokens, up.responseUsage.prompt_tokens, JSON.stringify(line));
      assert.equal(line.completion_tokens, up.responseUsage.completion_tokens, JSON.stringify(line));
      assert.ok(line.completion_tokens > 0);
      assert.equal(line.usage_source, 'upstream');
      const afterM = await gw.metrics();
      const grew = (name) => metricSum(afterM.samples, name, labels) - metricSum(before.samples, name, labels);
      assert.equal(grew('ctxgate_completion_tokens_total'), up.responseUsage.completion_tokens);
      assert.equal(grew('ctxgate_prompt_tokens_total'), up.responseUsage.prompt_tokens);
    })
  );

  test(
    "stream_options is spliced into the client's own bytes, not re-encoded",
    withLogs(logs, async () => {
      const raw = '{ "model" : "gpt-4o-mini",  "messages": [{"role":"user","content":"caf\\u00e9 \\ud83d\\ude00"}], "stream": true }';
      const res = await rawRequest(`${gw.baseURL}/chat/completions`, { method: 'POST', body: raw, headers: { 'content-type': 'application/json' } });
      assert.equal(res.status, 200, res.text);
      const up = fake.chatRequests().at(-1);
      const end = raw.lastIndexOf('}');
      assert.equal(up.raw, `${raw.slice(0, end)},"stream_options":{"include_usage":true}${raw.slice(end)}`);
    })
  );

  test(
    'include_usage false and an upstream that sends none: the tokens are counted with the tokenizer (usage_source counted)',
    withLogs(logs, async () => {
      const { chunks, line, up } = await stream({
        model: 'gpt-4o-mini',
        stream: true,
        stream_options: { include_usage: false },
        messages: [{ role: 'user', content: 'please count these words yourself' }],
      });
      assert.deepEqual(up.body.stream_options, { include_usage: false }, "the client's choice is kept");
      assert.ok(chunks.every((c) => !('usage' in c)));
      assert.equal(line.usage_source, 'counted', JSON.stringify(line));
      assert.ok(line.completion_tokens > 0, JSON.stringify(line));
      assert.ok(line.prompt_tokens > 0, JSON.stringify(line));
    })
  );

  test(
    'an upstream that ignores the request for usage: the log says usage_source none',
    withLogs(logs, async () => {
      fake.next({ omitUsage: true });
      const { line } = await stream({ model: 'gpt-4o-mini', stream: true, messages: [{ role: 'user', content: 'no usage' }] });
      assert.equal(line.usage_source, 'none', JSON.stringify(line));
      assert.equal(line.completion_tokens, 0);
    })
  );

  test(
    'a client that asks for usage still gets the usage chunk',
    withLogs(logs, async () => {
      const { chunks, line } = await stream({
        model: 'gpt-4o-mini',
        stream: true,
        stream_options: { include_usage: true },
        messages: [{ role: 'user', content: 'with usage' }],
      });
      assert.deepEqual(chunks.at(-1).choices, []);
      assert.ok(chunks.at(-1).usage.completion_tokens > 0);
      assert.equal(line.usage_source, 'upstream');
    })
  );

  test(
    'context route: a stream without include_usage is counted from the upstream usage and recorded in full',
    withLogs(logs, async () => {
      const conv = `usage-ctx-${process.pid}`;
      const { chunks, line, up } = await stream(
        { model: 'gpt-4o-mini', stream: true, messages: [{ role: 'user', content: 'remember this turn' }] },
        { path: '/ctx/v1', conv }
      );
      assert.deepEqual(up.body.stream_options, { include_usage: true });
      assert.ok(chunks.every((c) => !('usage' in c) && c.choices.length > 0));
      assert.equal(line.completion_tokens, up.responseUsage.completion_tokens);
      assert.equal(line.usage_source, 'upstream');
      const next = await postJSON(
        `${gw.url}/ctx/v1/chat/completions`,
        { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'and now?' }] },
        { headers: { 'x-conversation-id': conv } }
      );
      assert.equal(next.status, 200);
      assert.deepEqual(fake.chatRequests().at(-1).body.messages, [
        { role: 'user', content: 'remember this turn' },
        { role: 'assistant', content: 'reply to: remember this turn' },
        { role: 'user', content: 'and now?' },
      ]);
    })
  );
  test(
    'events split byte by byte, CRLF or LF, usage:null with or without spaces: each event is relayed once, usage removed, counted',
    withLogs(logs, async () => {
      const sseBytes = [
        'data: {"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":"a"}}],"usage":null}\r\n\r\n',
        'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"b\\"usage\\":null"}}], "usage": null}\n\n',
        ': a comment\n\n',
        'data: {"id":"c1","usage":null,"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\r\n\r\n',
        'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}\r\n\r\n',
        'data: [DONE]\r\n\r\n',
      ].join('');
      fake.next({ sseBytes });
      const { res, chunks, line } = await stream({ model: 'gpt-4o-mini', stream: true, messages: [{ role: 'user', content: 'bytes' }] });
      assert.deepEqual(chunks, [
        { id: 'c1', choices: [{ index: 0, delta: { role: 'assistant', content: 'a' } }] },
        { id: 'c1', choices: [{ index: 0, delta: { content: 'b"usage":null' } }] },
        { id: 'c1', choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] },
      ]);
      assert.ok(res.text.includes(': a comment\n\n'), 'other events pass unchanged');
      assert.equal(line.prompt_tokens, 7);
      assert.equal(line.completion_tokens, 3);
      assert.equal(line.usage_source, 'upstream');
    })
  );
});
