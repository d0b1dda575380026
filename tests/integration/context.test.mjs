// context.test.mjs — conversation context through a route with contextRef, driven by the official
// `openai` SDK against the fake OpenAI upstream (what the fake records is exactly what the model
// received): history injection with the persona, X-Conversation-Id / X-Context-Turns, streamed
// answers recorded in full, failures that record nothing, tool calls stored and replayed, MCP
// tools merged into the request, tenants kept apart, bad conversation ids refused.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import OpenAI from 'openai';

import { startFakeOpenAI } from '../fakes/openai.mjs';
import { startGateway, withLogs } from '../lib/gateway.mjs';
import { assertOpenAIError, collectStream, postJSON, sseData } from '../lib/http.mjs';

const ALICE = 'sk-alice-ctx-0001';
const BOB = 'sk-bob-ctx-0002';
const PERSONA = 'You are the Acme support assistant.';

const MCP_TOOLS = [
  {
    type: 'function',
    function: {
      name: 'lookup_order',
      description: 'Find an order by its number (from the MCP)',
      parameters: { type: 'object', properties: { order: { type: 'string' } }, required: ['order'] },
    },
  },
  {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'MCP version of get_weather',
      parameters: { type: 'object', properties: { city: { type: 'string' } } },
    },
  },
];

// The streamed tool call the tool streamer sends, and the call as it must be stored.
const STREAMED_CALL = {
  id: 'call_stream_1',
  type: 'function',
  function: { name: 'lookup_order', arguments: '{"order":"A-1042"}' },
};

/**
 * A minimal OpenAI-wire upstream that answers every chat request with a *streamed* tool call
 * (the shared fake streams text only): role chunk, the call's id/name, its arguments in three
 * pieces, finish_reason tool_calls, [DONE]. Records request bodies.
 */
async function startToolStreamer() {
  const requests = [];
  const server = http.createServer((req, res) => {
    let raw = '';
    req.on('data', (d) => (raw += d));
    req.on('end', () => {
      const body = JSON.parse(raw || '{}');
      requests.push(body);
      const base = { id: 'chatcmpl-ts', object: 'chat.completion.chunk', created: 1, model: body.model };
      const args = STREAMED_CALL.function.arguments;
      const deltas = [
        { role: 'assistant', content: null },
        { tool_calls: [{ index: 0, id: STREAMED_CALL.id, type: 'function', function: { name: 'lookup_order', arguments: '' } }] },
        { tool_calls: [{ index: 0, function: { arguments: args.slice(0, 5) } }] },
        { tool_calls: [{ index: 0, function: { arguments: args.slice(5, 12) } }] },
        { tool_calls: [{ index: 0, function: { arguments: args.slice(12) } }] },
      ];
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      for (const d of deltas) res.write(`data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta: d, finish_reason: null }] })}\n\n`);
      res.write(`data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta: {}, finish_reason: 'tool_calls' }] })}\n\n`);
      res.end('data: [DONE]\n\n');
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    baseURL: `http://127.0.0.1:${server.address().port}/v1`,
    requests,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

/** The messages as the model must see them: no store-only fields. */
const turn = (user, answer) => [
  { role: 'user', content: user },
  { role: 'assistant', content: answer },
];

let convSeq = 0;
const newConv = (tag) => `${tag}-${process.pid}-${++convSeq}`;

describe('conversation context through the openai SDK (Memory store)', () => {
  let fake;
  let streamer;
  let gw;
  let alice;
  let bob;

  before(async () => {
    fake = await startFakeOpenAI();
    streamer = await startToolStreamer();
    gw = await startGateway({
      manifests: `
apiVersion: v1
kind: Secret
metadata: {name: client-keys}
stringData: {alice: ${ALICE}, bob: ${BOB}}
---
apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: support-context}
spec:
  storage: {type: Memory}
  contextStrategy: {type: LastN, lastN: 20}
  persona: "${PERSONA}"
  tools: ${JSON.stringify(MCP_TOOLS)}
---
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-context}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - name: smart
    type: OpenAI
    config: {endpoint: ${fake.baseURL}, modelName: gpt-4o-mini}
  - name: streamer
    type: OpenAI
    config: {endpoint: ${streamer.baseURL}, modelName: gpt-4o-mini}
  routes:
  - name: main
    backends: [{target: smart}]
    contextRef: {name: support-context}
  - name: tool-stream
    pathPrefix: /v1/ts
    backends: [{target: streamer}]
    contextRef: {name: support-context}
  - name: plain
    pathPrefix: /v1/plain
    backends: [{target: smart}]
  authentication:
    type: APIKey
    apiKeys:
    - {name: alice, secretRef: {name: client-keys, key: alice}, tenant: team-a}
    - {name: bob, secretRef: {name: client-keys, key: bob}, tenant: team-b}
`,
    });
    alice = new OpenAI({ baseURL: gw.baseURL, apiKey: ALICE, maxRetries: 0, timeout: 30000 });
    bob = new OpenAI({ baseURL: gw.baseURL, apiKey: BOB, maxRetries: 0, timeout: 30000 });
  });

  after(async () => {
    if (gw) await gw.stop();
    if (fake) await fake.close();
    if (streamer) await streamer.close();
  });

  beforeEach(() => fake.reset());

  const logs = () => gw;

  /** One non-stream turn through the SDK: {text, message, conv, turns, upstream}. */
  async function ask(client, conv, messages, extra = {}) {
    const before = fake.chatRequests().length;
    const headers = conv === undefined ? {} : { 'X-Conversation-Id': conv };
    const { data, response } = await client.chat.completions
      .create({ model: 'smart', messages, ...extra }, { headers })
      .withResponse();
    const reqs = fake.chatRequests();
    return {
      text: data.choices[0].message.content,
      message: data.choices[0].message,
      conv: response.headers.get('x-conversation-id'),
      turns: response.headers.get('x-context-turns'),
      upstream: reqs.length > before ? reqs[reqs.length - 1].body : null,
    };
  }

  test(
    'three turns: persona, then turns 1-2 with the real answers, then the new message; headers say so',
    withLogs(logs, async () => {
      const conv = newConv('sdk');
      const t1 = await ask(alice, conv, [{ role: 'user', content: 'My router blinks red.' }]);
      assert.equal(t1.text, 'reply to: My router blinks red.');
      assert.equal(t1.conv, conv, 'X-Conversation-Id echoed');
      assert.equal(t1.turns, '0', 'a new conversation has no stored messages');
      assert.deepEqual(t1.upstream.messages, [
        { role: 'system', content: PERSONA },
        { role: 'user', content: 'My router blinks red.' },
      ]);

      fake.next({ text: 'Unplug it for ten seconds.' });
      const t2 = await ask(alice, conv, [{ role: 'user', content: 'What should I do?' }]);
      assert.equal(t2.text, 'Unplug it for ten seconds.');
      assert.equal(t2.turns, '2');

      const t3 = await ask(alice, conv, [{ role: 'user', content: 'Done, still red.' }]);
      assert.equal(t3.conv, conv);
      assert.equal(t3.turns, '4', 'X-Context-Turns counts the stored messages sent upstream');
      assert.deepEqual(t3.upstream.messages, [
        { role: 'system', content: PERSONA },
        ...turn('My router blinks red.', t1.text),
        ...turn('What should I do?', 'Unplug it for ten seconds.'),
        { role: 'user', content: 'Done, still red.' },
      ]);
    })
  );

  test(
    "the request's own system message goes upstream after the persona but is not stored",
    withLogs(logs, async () => {
      const conv = newConv('sys');
      const t1 = await ask(alice, conv, [
        { role: 'system', content: 'Answer in French.' },
        { role: 'user', content: 'Bonjour' },
      ]);
      assert.deepEqual(t1.upstream.messages, [
        { role: 'system', content: PERSONA },
        { role: 'system', content: 'Answer in French.' },
        { role: 'user', content: 'Bonjour' },
      ]);
      const t2 = await ask(alice, conv, [{ role: 'user', content: 'Encore' }]);
      assert.equal(t2.turns, '2');
      assert.deepEqual(t2.upstream.messages, [
        { role: 'system', content: PERSONA },
        ...turn('Bonjour', 'reply to: Bonjour'),
        { role: 'user', content: 'Encore' },
      ]);
    })
  );

  test(
    'no X-Conversation-Id: no persona, no history, no context headers, and nothing is recorded',
    withLogs(logs, async () => {
      const conv = newConv('nohdr');
      await ask(alice, conv, [{ role: 'user', content: 'first, with a header' }]);

      const res = await postJSON(
        `${gw.baseURL}/chat/completions`,
        { model: 'smart', messages: [{ role: 'user', content: 'no header here' }] },
        { headers: { authorization: `Bearer ${ALICE}` } }
      );
      assert.equal(res.status, 200, res.text);
      assert.equal(res.headers['x-conversation-id'], undefined);
      assert.equal(res.headers['x-context-turns'], undefined);
      const up = fake.chatRequests().at(-1).body;
      assert.deepEqual(up.messages, [{ role: 'user', content: 'no header here' }], 'sent unchanged');
      assert.equal(up.tools, undefined, 'no MCP tools without a conversation');

      const t3 = await ask(alice, conv, [{ role: 'user', content: 'third' }]);
      assert.equal(t3.turns, '2', 'only the turn made with the header is stored');
      assert.deepEqual(t3.upstream.messages, [
        { role: 'system', content: PERSONA },
        ...turn('first, with a header', 'reply to: first, with a header'),
        { role: 'user', content: 'third' },
      ]);
    })
  );

  test(
    'a route without contextRef ignores X-Conversation-Id',
    withLogs(logs, async () => {
      const conv = newConv('plain');
      const res = await postJSON(
        `${gw.url}/v1/plain/chat/completions`,
        { model: 'smart', messages: [{ role: 'user', content: 'plain route' }] },
        { headers: { authorization: `Bearer ${ALICE}`, 'x-conversation-id': conv } }
      );
      assert.equal(res.status, 200, res.text);
      assert.equal(res.headers['x-context-turns'], undefined);
      assert.deepEqual(fake.chatRequests().at(-1).body.messages, [{ role: 'user', content: 'plain route' }]);
      const t2 = await ask(alice, conv, [{ role: 'user', content: 'now with context' }]);
      assert.equal(t2.turns, '0', 'the plain route recorded nothing');
    })
  );

  test(
    'streamed answers are recorded in full (assembled from deltas) and the next request sees them',
    withLogs(logs, async () => {
      const conv = newConv('stream');
      const answer = 'Sure thing: the quick brown fox jumps over the lazy dog, twice.';
      fake.next({ text: answer, chunks: 7 });
      const { data: stream, response } = await alice.chat.completions
        .create({ model: 'smart', stream: true, messages: [{ role: 'user', content: 'Tell me a pangram' }] }, { headers: { 'X-Conversation-Id': conv } })
        .withResponse();
      assert.equal(response.headers.get('x-conversation-id'), conv);
      assert.equal(response.headers.get('x-context-turns'), '0');
      const { text, chunks } = await collectStream(stream);
      assert.equal(text, answer);
      assert.ok(chunks.filter((c) => c.choices[0]?.delta?.content).length >= 7, 'the answer came in pieces');

      // the second turn streams too; a raw request shows the stream ends with data: [DONE]
      fake.next({ text: 'Second streamed answer, word by word.' });
      const res = await postJSON(
        `${gw.baseURL}/chat/completions`,
        { model: 'smart', stream: true, messages: [{ role: 'user', content: 'Another one' }] },
        { headers: { authorization: `Bearer ${ALICE}`, 'x-conversation-id': conv } }
      );
      assert.equal(res.status, 200, res.text);
      assert.match(res.headers['content-type'], /^text\/event-stream/);
      assert.equal(res.headers['x-context-turns'], '2');
      const events = sseData(res.text);
      assert.equal(events.at(-1), '[DONE]', 'the stream ends with data: [DONE]');
      assert.equal(events.filter((e) => e === '[DONE]').length, 1, 'exactly one [DONE]');
      const streamed = events
        .slice(0, -1)
        .map((e) => JSON.parse(e).choices[0]?.delta?.content ?? '')
        .join('');
      assert.equal(streamed, 'Second streamed answer, word by word.');

      const t3 = await ask(alice, conv, [{ role: 'user', content: 'Thanks' }]);
      assert.equal(t3.turns, '4');
      assert.deepEqual(t3.upstream.messages, [
        { role: 'system', content: PERSONA },
        ...turn('Tell me a pangram', answer),
        ...turn('Another one', 'Second streamed answer, word by word.'),
        { role: 'user', content: 'Thanks' },
      ]);
    })
  );

  test(
    'MCP tools are added to the upstream request; a tool the request defines itself wins',
    withLogs(logs, async () => {
      const conv = newConv('tools');
      const own = {
        type: 'function',
        function: { name: 'get_weather', description: "the request's own", parameters: { type: 'object', properties: {} } },
      };
      const t1 = await ask(alice, conv, [{ role: 'user', content: 'weather?' }], { tools: [own] });
      const tools = t1.upstream.tools;
      assert.ok(Array.isArray(tools), 'tools were sent upstream');
      const byName = Object.fromEntries(tools.map((t) => [t.function.name, t]));
      assert.deepEqual(Object.keys(byName).sort(), ['get_weather', 'lookup_order']);
      assert.equal(tools.length, 2, 'get_weather appears once');
      assert.deepEqual(byName.get_weather, own, "the request's own definition wins");
      assert.deepEqual(byName.lookup_order, MCP_TOOLS[0], 'the MCP tool is injected as declared');

      const t2 = await ask(alice, conv, [{ role: 'user', content: 'no tools of my own' }]);
      assert.deepEqual(t2.upstream.tools, MCP_TOOLS, 'without own tools the MCP tools are sent');
    })
  );

  test(
    'an upstream failure records nothing: turn 3 sees only turn 1',
    withLogs(logs, async () => {
      const conv = newConv('fail');
      await ask(alice, conv, [{ role: 'user', content: 'turn one' }]);

      fake.next({ status: 500 });
      await assert.rejects(
        alice.chat.completions.create({ model: 'smart', messages: [{ role: 'user', content: 'turn two fails' }] }, { headers: { 'X-Conversation-Id': conv } }),
        (err) => err instanceof OpenAI.APIError && err.status >= 500
      );

      // a stream cut in the middle is not an answer either
      fake.next({ text: 'this answer will be cut short here', cutAfterChunks: 2 });
      const stream = await alice.chat.completions.create(
        { model: 'smart', stream: true, messages: [{ role: 'user', content: 'turn two-b is cut' }] },
        { headers: { 'X-Conversation-Id': conv } }
      );
      await assert.rejects(collectStream(stream), 'the cut stream ends in an error');

      const t3 = await ask(alice, conv, [{ role: 'user', content: 'turn three' }]);
      assert.equal(t3.turns, '2');
      assert.deepEqual(t3.upstream.messages, [
        { role: 'system', content: PERSONA },
        ...turn('turn one', 'reply to: turn one'),
        { role: 'user', content: 'turn three' },
      ]);
    })
  );

  test(
    'a tool-call answer (non-stream) is stored with its tool_calls and precedes the tool result',
    withLogs(logs, async () => {
      const conv = newConv('toolcall');
      const call = { id: 'call_abc123', type: 'function', function: { name: 'lookup_order', arguments: '{"order":"B-7"}' } };
      fake.next({
        body: {
          id: 'chatcmpl-tool',
          object: 'chat.completion',
          created: 1,
          model: 'gpt-4o-mini',
          choices: [{ index: 0, message: { role: 'assistant', content: null, tool_calls: [call] }, finish_reason: 'tool_calls' }],
          usage: { prompt_tokens: 5, completion_tokens: 5, total_tokens: 10 },
        },
      });
      const t1 = await ask(alice, conv, [{ role: 'user', content: 'Where is order B-7?' }]);
      assert.deepEqual(t1.message.tool_calls, [call]);

      fake.next({ text: 'Order B-7 ships tomorrow.' });
      const toolResult = { role: 'tool', tool_call_id: call.id, content: '{"status":"packed"}' };
      const t2 = await ask(alice, conv, [toolResult]);
      assert.equal(t2.turns, '2');
      assert.deepEqual(t2.upstream.messages, [
        { role: 'system', content: PERSONA },
        { role: 'user', content: 'Where is order B-7?' },
        { role: 'assistant', content: null, tool_calls: [call] },
        toolResult,
      ]);

      const t3 = await ask(alice, conv, [{ role: 'user', content: 'ok' }]);
      assert.deepEqual(t3.upstream.messages.slice(1, -1), [
        { role: 'user', content: 'Where is order B-7?' },
        { role: 'assistant', content: null, tool_calls: [call] },
        toolResult,
        { role: 'assistant', content: 'Order B-7 ships tomorrow.' },
      ]);
    })
  );

  test(
    'a streamed tool-call answer is stored with the call assembled from its deltas',
    withLogs(logs, async () => {
      const conv = newConv('toolstream');
      const client = new OpenAI({ baseURL: `${gw.url}/v1/ts`, apiKey: ALICE, maxRetries: 0 });
      const stream = await client.chat.completions.create(
        { model: 'streamer', stream: true, messages: [{ role: 'user', content: 'Where is order A-1042?' }] },
        { headers: { 'X-Conversation-Id': conv } }
      );
      const { chunks } = await collectStream(stream);
      assert.equal(chunks.at(-1).choices[0].finish_reason, 'tool_calls', 'the stream reached its end');

      fake.next({ text: 'It is on its way.' });
      const toolResult = { role: 'tool', tool_call_id: STREAMED_CALL.id, content: 'in transit' };
      const t2 = await ask(alice, conv, [toolResult]);
      assert.equal(t2.turns, '2');
      assert.deepEqual(t2.upstream.messages, [
        { role: 'system', content: PERSONA },
        { role: 'user', content: 'Where is order A-1042?' },
        { role: 'assistant', content: null, tool_calls: [STREAMED_CALL] },
        toolResult,
      ]);
    })
  );

  test(
    'two tenants using the same X-Conversation-Id have separate histories',
    withLogs(logs, async () => {
      const conv = newConv('shared');
      await ask(alice, conv, [{ role: 'user', content: 'alice: my PIN hint is blue' }]);
      await ask(bob, conv, [{ role: 'user', content: 'bob: my PIN hint is green' }]);
      await ask(bob, conv, [{ role: 'user', content: 'bob again' }]);

      const a = await ask(alice, conv, [{ role: 'user', content: 'alice: what was my hint?' }]);
      assert.equal(a.turns, '2');
      assert.deepEqual(a.upstream.messages, [
        { role: 'system', content: PERSONA },
        ...turn('alice: my PIN hint is blue', 'reply to: alice: my PIN hint is blue'),
        { role: 'user', content: 'alice: what was my hint?' },
      ]);
      const b = await ask(bob, conv, [{ role: 'user', content: 'bob: what was my hint?' }]);
      assert.equal(b.turns, '4');
      assert.ok(!JSON.stringify(b.upstream.messages).includes('alice'), "bob's model never sees alice's turns");
      assert.deepEqual(b.upstream.messages.slice(1, 3), turn('bob: my PIN hint is green', 'reply to: bob: my PIN hint is green'));
    })
  );

  test(
    'a bad X-Conversation-Id (space, 300 characters) is refused with 400 param X-Conversation-Id',
    withLogs(logs, async () => {
      for (const bad of ['has space', 'x'.repeat(300)]) {
        const res = await postJSON(
          `${gw.baseURL}/chat/completions`,
          { model: 'smart', messages: [{ role: 'user', content: 'hi' }] },
          { headers: { authorization: `Bearer ${ALICE}`, 'x-conversation-id': bad } }
        );
        const e = assertOpenAIError(assert, res, 400);
        assert.equal(e.param, 'X-Conversation-Id', res.text);
        assert.equal(e.type, 'invalid_request_error');
      }
      assert.equal(fake.chatRequests().length, 0, 'nothing reached the model');

      // the longest valid id (256) is accepted
      const longest = 'y'.repeat(256);
      const ok = await ask(alice, longest, [{ role: 'user', content: 'long id' }]);
      assert.equal(ok.conv, longest);
    })
  );
});
