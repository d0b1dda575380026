// chat.test.mjs — Chat Completions proxied to an OpenAI-type target (the fake OpenAI server),
// with the official `openai` SDK as the client: model renaming, parameter merging, the
// provider key from a Secret, answers relayed intact, streams in order, usage passthrough.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

import { startFakeOpenAI, fakeTokens } from '../fakes/openai.mjs';
import { startGateway, withLogs } from '../lib/gateway.mjs';
import { collectStream, postJSON, rawRequest, sseData } from '../lib/http.mjs';

const UPSTREAM_KEY = 'sk-upstream-test-0123456789';
const CLIENT_KEY = 'sk-client-alice-abcdef';

describe('chat completions through an OpenAI target', () => {
  let fake;
  let gw;
  let client;

  before(async () => {
    fake = await startFakeOpenAI();
    gw = await startGateway({
      manifests: `
apiVersion: v1
kind: Secret
metadata: {name: provider-keys}
stringData: {openai: ${UPSTREAM_KEY}}
---
apiVersion: v1
kind: Secret
metadata: {name: client-keys}
stringData: {alice: ${CLIENT_KEY}}
---
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-chat}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - name: smart
    aliases: [smart-alias]
    type: OpenAI
    config:
      endpoint: ${fake.baseURL}
      modelName: gpt-4o-mini-2024-07-18
      apiKeyRef: {name: provider-keys, key: openai}
      parameters: {temperature: 0.25, max_tokens: 77, top_p: 0.5}
      timeouts: {connect: 5, firstToken: 20, total: 60}
  routes:
  - name: main
    backends: [{target: smart}]
  authentication:
    type: APIKey
    apiKeys: [{name: alice, secretRef: {name: client-keys, key: alice}}]
`,
    });
    client = new OpenAI({ baseURL: gw.baseURL, apiKey: CLIENT_KEY, maxRetries: 0, timeout: 30000 });
  });

  after(async () => {
    if (gw) await gw.stop();
    if (fake) await fake.close();
  });

  beforeEach(() => fake.reset());

  const logs = () => gw;

  test(
    'non-stream: upstream gets modelName, merged parameters and the Secret key; the answer arrives intact',
    withLogs(logs, async () => {
      const messages = [
        { role: 'system', content: 'You are terse.' },
        { role: 'user', content: 'Hello there, gateway' },
      ];
      const completion = await client.chat.completions.create({ model: 'smart', messages, max_tokens: 5 });

      assert.equal(completion.choices[0].message.content, 'reply to: Hello there, gateway');
      assert.equal(completion.choices[0].finish_reason, 'stop');
      assert.equal(completion.object, 'chat.completion');

      const reqs = fake.chatRequests();
      assert.equal(reqs.length, 1, 'exactly one upstream call');
      const up = reqs[0];
      assert.equal(up.method, 'POST');
      assert.equal(up.path, '/v1/chat/completions');
      assert.equal(up.body.model, 'gpt-4o-mini-2024-07-18', 'modelName replaces the logical name');
      assert.deepEqual(up.body.messages, messages, 'messages are forwarded unchanged');
      assert.equal(up.body.temperature, 0.25, 'config.parameters merged under the request');
      assert.equal(up.body.top_p, 0.5, 'config.parameters merged under the request');
      assert.equal(up.body.max_tokens, 5, 'a parameter the request sets wins');
      assert.equal(up.headers.authorization, `Bearer ${UPSTREAM_KEY}`, "the target's key from the Secret");
      assert.ok(!JSON.stringify(up.headers).includes(CLIENT_KEY), "the client's key never reaches the provider");

      assert.deepEqual(
        { p: completion.usage.prompt_tokens, c: completion.usage.completion_tokens, t: completion.usage.total_tokens },
        { p: up.responseUsage.prompt_tokens, c: up.responseUsage.completion_tokens, t: up.responseUsage.total_tokens }
      );
    })
  );

  test(
    "non-stream: the provider's JSON body is returned as is",
    withLogs(logs, async () => {
      const res = await postJSON(
        `${gw.baseURL}/chat/completions`,
        { model: 'smart', messages: [{ role: 'user', content: 'exact body please' }] },
        { headers: { authorization: `Bearer ${CLIENT_KEY}` } }
      );
      assert.equal(res.status, 200, res.text);
      assert.match(res.headers['content-type'], /^application\/json/);
      const up = fake.chatRequests()[0];
      assert.ok(up, 'the fake saw the request');
      const sent = JSON.parse(JSON.stringify(up.responseBody));
      assert.deepEqual(res.json, sent);
    })
  );

  test(
    'an alias resolves to its target',
    withLogs(logs, async () => {
      const completion = await client.chat.completions.create({
        model: 'smart-alias',
        messages: [{ role: 'user', content: 'via alias' }],
      });
      assert.equal(completion.choices[0].message.content, 'reply to: via alias');
      assert.equal(fake.chatRequests()[0].body.model, 'gpt-4o-mini-2024-07-18');
    })
  );

  test(
    'stream: chunks arrive in order, the first carries the role, the stream ends properly',
    withLogs(logs, async () => {
      const stream = await client.chat.completions.create({
        model: 'smart',
        stream: true,
        messages: [{ role: 'user', content: 'count one two three four five six' }],
      });
      const { text, chunks } = await collectStream(stream);
      assert.equal(text, 'reply to: count one two three four five six');

      const up = fake.chatRequests()[0];
      assert.equal(up.body.stream, true);
      assert.equal(up.body.model, 'gpt-4o-mini-2024-07-18');
      assert.equal(up.headers.authorization, `Bearer ${UPSTREAM_KEY}`);

      // every event the fake sent, in the fake's order, but the usage-only chunk the gateway
      // asked for (stream_options.include_usage) to count tokens: the client did not ask for it
      assert.equal(chunks.length, up.sentChunks - 1, 'one client chunk per upstream event but the usage chunk');
      const pieces = chunks.map((c) => c.choices[0]?.delta?.content).filter((x) => typeof x === 'string' && x !== '');
      assert.deepEqual(pieces, ['reply', ' to:', ' count', ' one', ' two', ' three', ' four', ' five', ' six']);
      assert.equal(chunks[0].choices[0].delta.role, 'assistant');
      assert.equal(chunks[chunks.length - 1].choices[0].finish_reason, 'stop');
      for (const c of chunks) assert.equal(c.object, 'chat.completion.chunk');
      assert.ok(chunks.every((c) => !('usage' in c)), 'no usage (not even usage: null) unless include_usage');
      assert.deepEqual(up.body.stream_options, { include_usage: true }, 'the gateway asks for usage');
    })
  );

  test(
    'stream with include_usage: the option reaches the provider and the usage chunk reaches the client',
    withLogs(logs, async () => {
      const stream = await client.chat.completions.create({
        model: 'smart',
        stream: true,
        stream_options: { include_usage: true },
        messages: [{ role: 'user', content: 'usage please' }],
      });
      const { text, chunks } = await collectStream(stream);
      assert.equal(text, 'reply to: usage please');
      const up = fake.chatRequests()[0];
      assert.deepEqual(up.body.stream_options, { include_usage: true });
      const last = chunks[chunks.length - 1];
      assert.deepEqual(last.choices, [], 'the usage chunk has no choices');
      assert.equal(last.usage.completion_tokens, fakeTokens('reply to: usage please'));
      assert.equal(last.usage.prompt_tokens, up.responseUsage.prompt_tokens);
      assert.equal(last.usage.total_tokens, up.responseUsage.total_tokens);
    })
  );

  test(
    'stream on the wire: text/event-stream, data events, ends with data: [DONE]',
    withLogs(logs, async () => {
      const res = await postJSON(
        `${gw.baseURL}/chat/completions`,
        { model: 'smart', stream: true, messages: [{ role: 'user', content: 'raw stream' }] },
        { headers: { authorization: `Bearer ${CLIENT_KEY}` } }
      );
      assert.equal(res.status, 200, res.text);
      assert.match(res.headers['content-type'], /^text\/event-stream/);
      const data = sseData(res.text);
      assert.equal(data[data.length - 1], '[DONE]');
      assert.equal(data.filter((d) => d === '[DONE]').length, 1);
      const text = data
        .slice(0, -1)
        .map((d) => JSON.parse(d))
        .map((c) => c.choices[0]?.delta?.content || '')
        .join('');
      assert.equal(text, 'reply to: raw stream');
      assert.ok(res.text.endsWith('data: [DONE]\n\n'), 'the last event is [DONE] followed by a blank line');
    })
  );

  test(
    'X-Request-Id: a client id is echoed; without one an id is generated',
    withLogs(logs, async () => {
      const body = { model: 'smart', messages: [{ role: 'user', content: 'ids' }] };
      const headers = { authorization: `Bearer ${CLIENT_KEY}` };
      const a = await postJSON(`${gw.baseURL}/chat/completions`, body, { headers: { ...headers, 'x-request-id': 'it-chat-req-42' } });
      assert.equal(a.status, 200);
      assert.equal(a.headers['x-request-id'], 'it-chat-req-42');
      const b = await postJSON(`${gw.baseURL}/chat/completions`, body, { headers });
      const c = await postJSON(`${gw.baseURL}/chat/completions`, body, { headers });
      assert.ok(b.headers['x-request-id'] && b.headers['x-request-id'].length > 0, 'generated id');
      assert.notEqual(b.headers['x-request-id'], c.headers['x-request-id'], 'generated ids differ');
    })
  );

  test(
    "a provider 4xx is relayed with the provider's JSON body",
    withLogs(logs, async () => {
      const providerBody = {
        error: {
          message: "Invalid value for 'temperature': must be <= 2.",
          type: 'invalid_request_error',
          param: 'temperature',
          code: 'invalid_value',
        },
      };
      fake.next({ status: 400, body: providerBody });
      const res = await postJSON(
        `${gw.baseURL}/chat/completions`,
        { model: 'smart', temperature: 9, messages: [{ role: 'user', content: 'x' }] },
        { headers: { authorization: `Bearer ${CLIENT_KEY}` } }
      );
      assert.equal(res.status, 400);
      assert.deepEqual(res.json, providerBody);

      fake.next({ status: 400, body: providerBody });
      await assert.rejects(
        client.chat.completions.create({ model: 'smart', temperature: 9, messages: [{ role: 'user', content: 'x' }] }),
        (err) => {
          assert.ok(err instanceof OpenAI.BadRequestError, `BadRequestError, got ${err?.constructor?.name}`);
          assert.equal(err.status, 400);
          assert.equal(err.code, 'invalid_value');
          assert.equal(err.param, 'temperature');
          return true;
        }
      );
    })
  );

  test(
    'GET /models lists the targets and aliases of the route',
    withLogs(logs, async () => {
      const ids = [];
      for await (const m of client.models.list()) {
        ids.push(m.id);
        assert.equal(m.object, 'model');
        assert.equal(m.owned_by, 'ctxgate');
      }
      assert.deepEqual(ids.sort(), ['smart', 'smart-alias']);
      assert.equal(fake.requests.length, 0, 'the model list is answered by the gateway itself');
    })
  );

  test(
    'multi-byte and escaped text survives the round trip',
    withLogs(logs, async () => {
      const content = 'naïve café — 日本語 "quoted" \\ backslash \n newline 🚀';
      const completion = await client.chat.completions.create({ model: 'smart', messages: [{ role: 'user', content }] });
      assert.equal(completion.choices[0].message.content, `reply to: ${content}`);
      assert.equal(fake.chatRequests()[0].body.messages[0].content, content);
      const stream = await client.chat.completions.create({ model: 'smart', stream: true, messages: [{ role: 'user', content }] });
      const { text } = await collectStream(stream);
      assert.equal(text, `reply to: ${content}`);
    })
  );

  test(
    'raw requests without the SDK reach the same target (curl-like client)',
    withLogs(logs, async () => {
      const res = await rawRequest(`${gw.baseURL}/models`, { headers: { authorization: `Bearer ${CLIENT_KEY}` } });
      assert.equal(res.status, 200);
      assert.equal(res.json.object, 'list');
      assert.ok(Array.isArray(res.json.data));
      for (const m of res.json.data) assert.deepEqual(Object.keys(m).sort(), ['created', 'id', 'object', 'owned_by']);
    })
  );
});
