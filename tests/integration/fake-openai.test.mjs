// fake-openai.test.mjs — the fake OpenAI server itself, spoken to directly by the official
// `openai` SDK: if the SDK cannot parse it, every gateway test built on it would prove nothing.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

import { fakeTokens, startFakeOpenAI } from '../fakes/openai.mjs';
import { collectStream, postJSON, sseData, within } from '../lib/http.mjs';

describe('fake OpenAI server (tests/fakes/openai.mjs)', () => {
  let fake;
  let client;
  before(async () => {
    fake = await startFakeOpenAI({ apiKey: 'sk-fake' });
    client = new OpenAI({ baseURL: fake.baseURL, apiKey: 'sk-fake', maxRetries: 0 });
  });
  after(async () => fake && (await fake.close()));
  beforeEach(() => fake.reset());

  test('non-stream answer parses in the SDK and is recorded', async () => {
    const c = await client.chat.completions.create({ model: 'gpt-x', messages: [{ role: 'user', content: 'abc' }] });
    assert.equal(c.choices[0].message.content, 'reply to: abc');
    assert.equal(c.model, 'gpt-x');
    assert.equal(c.usage.completion_tokens, fakeTokens('reply to: abc'));
    assert.equal(fake.requests.length, 1);
    assert.equal(fake.requests[0].headers.authorization, 'Bearer sk-fake');
    assert.deepEqual(fake.requests[0].body.messages, [{ role: 'user', content: 'abc' }]);
  });

  test('stream with usage parses in the SDK; the wire ends with [DONE]', async () => {
    const s = await client.chat.completions.create({
      model: 'gpt-x',
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: 'user', content: 'a b c' }],
    });
    const { text, chunks } = await collectStream(s);
    assert.equal(text, 'reply to: a b c');
    assert.equal(chunks[0].choices[0].delta.role, 'assistant');
    assert.deepEqual(chunks.at(-1).choices, []);
    assert.equal(chunks.at(-1).usage.total_tokens, fake.requests[0].responseUsage.total_tokens);
    const raw = await postJSON(`${fake.baseURL}/chat/completions`, { model: 'm', stream: true, messages: [{ role: 'user', content: 'q' }] }, { headers: { authorization: 'Bearer sk-fake' } });
    assert.ok(raw.text.endsWith('data: [DONE]\n\n'));
    assert.equal(sseData(raw.text).length, fake.requests[1].sentChunks + 1);
  });

  test('queued behaviours: status, headers, default, cut, abort detection', async () => {
    fake.next({ status: 429, headers: { 'retry-after': '2' } });
    await assert.rejects(client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'x' }] }), (e) => e instanceof OpenAI.RateLimitError && e.headers.get('retry-after') === '2');
    fake.setDefault({ text: 'fixed' });
    const c = await client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'x' }] });
    assert.equal(c.choices[0].message.content, 'fixed');

    fake.next({ cutAfterChunks: 1, text: 'one two three' });
    const s = await client.chat.completions.create({ model: 'm', stream: true, messages: [{ role: 'user', content: 'x' }] });
    let got = '';
    await assert.rejects(async () => {
      for await (const ch of s) got += ch.choices[0]?.delta?.content || '';
    });
    assert.equal(got, 'one');

    fake.next({ text: 'a b c d e f g h', chunkDelayMs: 100 });
    const ac = new AbortController();
    const s2 = await client.chat.completions.create({ model: 'm', stream: true, messages: [{ role: 'user', content: 'x' }] }, { signal: ac.signal });
    for await (const ch of s2) {
      if (ch.choices[0]?.delta?.content) {
        ac.abort();
        break;
      }
    }
    const rec = fake.requests.at(-1);
    await within(rec.closed, 5000, 'the fake to see the close');
    assert.equal(rec.clientClosedEarly, true);
  });

  test('tools: "use the tool" gets a tool call, whole and streamed (arguments in pieces, then usage)', async () => {
    const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }];
    const messages = [{ role: 'user', content: 'please use the tool' }];
    const c = await client.chat.completions.create({ model: 'gpt-x', tools, messages });
    const m = c.choices[0].message;
    assert.equal(c.choices[0].finish_reason, 'tool_calls');
    assert.equal(m.content, null);
    assert.match(m.tool_calls[0].id, /^call_fake\d+$/);
    assert.equal(m.tool_calls[0].function.name, 'get_weather');
    assert.deepEqual(JSON.parse(m.tool_calls[0].function.arguments), { city: 'city-1' });
    assert.equal(c.usage.completion_tokens, fakeTokens(m.tool_calls[0].function.arguments));
    const plain = await client.chat.completions.create({ model: 'gpt-x', tools, messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(plain.choices[0].message.content, 'reply to: hi', 'no tool call unless asked');

    const s = await client.chat.completions.create({ model: 'gpt-x', tools, messages, stream: true, stream_options: { include_usage: true } });
    const { chunks } = await collectStream(s);
    const deltas = chunks.flatMap((ch) => ch.choices.flatMap((ci) => ci.delta.tool_calls || []));
    assert.ok(deltas.length >= 3, 'the id/name, then argument pieces');
    assert.equal(deltas[0].function.name, 'get_weather');
    assert.deepEqual(JSON.parse(deltas.map((d) => d.function.arguments).join('')), { city: 'city-1' });
    assert.equal(chunks.at(-2).choices[0].finish_reason, 'tool_calls');
    assert.ok(chunks.at(-1).usage.completion_tokens > 0);
  });

  test('a wrong key gets OpenAI 401 JSON', async () => {
    const bad = new OpenAI({ baseURL: fake.baseURL, apiKey: 'sk-wrong', maxRetries: 0 });
    await assert.rejects(bad.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'x' }] }), (e) => e instanceof OpenAI.AuthenticationError && e.code === 'invalid_api_key');
  });

  test('GET /v1/models', async () => {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    assert.deepEqual(ids, ['gpt-4o-mini', 'gpt-4o']);
  });
});
