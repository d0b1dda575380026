// fake-anthropic.test.mjs — the fake Anthropic server itself (tests/fakes/anthropic.mjs), spoken to
// directly by the official @anthropic-ai/sdk and by raw HTTP: its answers must parse in the real
// SDK (or raise the SDK's right error class) and have the shapes of the documented payloads in
// tests/fakes/fixtures/anthropic/, or every gateway test built on it would prove nothing.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Anthropic from '@anthropic-ai/sdk';

import { anthropicInputTokens, startFakeAnthropic } from '../fakes/anthropic.mjs';
import { parseSSE, shapeOf } from '../fakes/server.mjs';
import { postJSON } from '../lib/http.mjs';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fakes', 'fixtures', 'anthropic');
const fixtureJSON = (name) => JSON.parse(fs.readFileSync(path.join(FIXTURES, name), 'utf8'));
const fixtureSSE = (name) => parseSSE(fs.readFileSync(path.join(FIXTURES, name), 'utf8'));

// An event stream's shape: [event name, shape of its data], consecutive repeats collapsed (the
// number of deltas differs from answer to answer, their order and form must not).
function streamShape(events) {
  const out = [];
  for (const e of events) {
    const s = JSON.stringify([e.event, shapeOf(JSON.parse(e.data))]);
    if (out.at(-1) !== s) out.push(s);
  }
  return out.map((s) => JSON.parse(s));
}

const WEATHER = {
  name: 'get_weather',
  description: 'The weather in a city',
  input_schema: { type: 'object', properties: { location: { type: 'string' } }, required: ['location'] },
};
const HEADERS = { 'x-api-key': 'sk-ant-fake', 'anthropic-version': '2023-06-01' };

describe('fake Anthropic server (tests/fakes/anthropic.mjs)', () => {
  let fake;
  let client;
  const messages = (body) => postJSON(`${fake.baseURL}/v1/messages`, body, { headers: HEADERS });
  before(async () => {
    fake = await startFakeAnthropic({ apiKey: 'sk-ant-fake' });
    client = new Anthropic({ baseURL: fake.baseURL, apiKey: 'sk-ant-fake', maxRetries: 0 });
  });
  after(async () => fake && (await fake.close()));
  beforeEach(() => fake.reset());

  test('a plain answer parses in the SDK, has the documented shape and is recorded', async () => {
    const body = { model: 'claude-x', max_tokens: 100, system: 'be brief', messages: [{ role: 'user', content: 'hello there' }] };
    const m = await client.messages.create(body);
    assert.equal(m.content[0].text, 'reply to: hello there');
    assert.equal(m.model, 'claude-x');
    assert.equal(m.stop_reason, 'end_turn');
    assert.match(m.id, /^msg_/);
    assert.equal(m.usage.input_tokens, 4); // be brief hello there
    assert.equal(m.usage.input_tokens, anthropicInputTokens(body));
    assert.equal(m.usage.output_tokens, 4);
    const rec = fake.messageRequests()[0];
    assert.deepEqual(rec.body, body);
    assert.ok(rec.headers['anthropic-version'], 'the SDK sends anthropic-version');
    assert.equal(typeof rec.receivedAt, 'number');
    // the SDK sends its key as Authorization: Bearer; the fake accepts that and x-api-key
    assert.ok(rec.headers['x-api-key'] === 'sk-ant-fake' || rec.headers.authorization === 'Bearer sk-ant-fake');
    assert.deepEqual(shapeOf(rec.responseBody), shapeOf(fixtureJSON('message.json')));
  });

  test('messages.stream() with finalMessage(); the raw events follow the documented sequence', async () => {
    const s = client.messages.stream({ model: 'claude-x', max_tokens: 100, messages: [{ role: 'user', content: 'a b c' }] });
    let text = '';
    s.on('text', (t) => (text += t));
    const m = await s.finalMessage();
    assert.equal(text, 'reply to: a b c');
    assert.equal(m.content[0].text, 'reply to: a b c');
    assert.equal(m.stop_reason, 'end_turn');
    assert.equal(m.usage.output_tokens, 5);
    assert.equal(m.usage.input_tokens, 3);

    const raw = await messages({ model: 'm', max_tokens: 100, stream: true, messages: [{ role: 'user', content: 'x y' }] });
    assert.equal(raw.status, 200);
    assert.match(raw.headers['content-type'], /^text\/event-stream/);
    const events = parseSSE(raw.text);
    assert.deepEqual(
      events.map((e) => e.event),
      ['message_start', 'content_block_start', 'ping', ...Array(4).fill('content_block_delta'), 'content_block_stop', 'message_delta', 'message_stop']
    );
    for (const e of events) assert.equal(JSON.parse(e.data).type, e.event, 'each data names its event');
    assert.deepEqual(streamShape(events), streamShape(fixtureSSE('stream.txt')));
  });

  test('tools: "use the tool" gets a tool_use block, streamed as input_json_delta pieces split mid-JSON', async () => {
    const m = await client.messages.create({ model: 'c', max_tokens: 100, tools: [WEATHER], messages: [{ role: 'user', content: 'please use the tool' }] });
    assert.equal(m.stop_reason, 'tool_use');
    assert.equal(m.content.length, 1);
    assert.equal(m.content[0].type, 'tool_use');
    assert.equal(m.content[0].name, 'get_weather');
    assert.match(m.content[0].id, /^toolu_/);
    assert.deepEqual(m.content[0].input, { location: 'location-1' });
    assert.deepEqual(shapeOf(fake.requests[0].responseBody), shapeOf(fixtureJSON('message-tool-use.json')));

    // without the phrase (and without tool_choice) the answer is text
    const plain = await client.messages.create({ model: 'c', max_tokens: 100, tools: [WEATHER], messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(plain.content[0].type, 'text');
    // a behaviour forces a call with a given input
    fake.next({ tool: { name: 'get_weather', input: { location: 'Paris' } }, toolText: 'Let me check.' });
    const forced = await client.messages.create({ model: 'c', max_tokens: 100, tools: [WEATHER], messages: [{ role: 'user', content: 'hi' }] });
    assert.deepEqual(
      forced.content.map((c) => c.type),
      ['text', 'tool_use']
    );
    assert.deepEqual(forced.content[1].input, { location: 'Paris' });

    const s = client.messages.stream({ model: 'c', max_tokens: 100, tools: [WEATHER], messages: [{ role: 'user', content: 'use the tool now' }] });
    const fm = await s.finalMessage();
    assert.equal(fm.stop_reason, 'tool_use');
    assert.deepEqual(fm.content[0].input, { location: 'location-1' });

    const raw = await messages({ model: 'c', max_tokens: 100, stream: true, tools: [WEATHER], messages: [{ role: 'user', content: 'use the tool' }] });
    const events = parseSSE(raw.text);
    assert.deepEqual(streamShape(events), streamShape(fixtureSSE('stream-tool-use.txt')));
    const pieces = events.filter((e) => e.event === 'content_block_delta').map((e) => JSON.parse(e.data).delta.partial_json);
    const nonEmpty = pieces.filter((p) => p);
    assert.ok(nonEmpty.length >= 2, 'several pieces');
    for (const p of nonEmpty) assert.throws(() => JSON.parse(p), 'each piece alone is not JSON (split mid-JSON)');
    assert.deepEqual(JSON.parse(pieces.join('')), { location: 'location-1' });

    // the round trip: the tool result is what the next answer replies to
    const tu = fm.content[0];
    const next = await client.messages.create({
      model: 'c',
      max_tokens: 100,
      tools: [WEATHER],
      messages: [
        { role: 'user', content: 'use the tool now' },
        { role: 'assistant', content: [tu] },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: tu.id, content: 'sunny' }] },
      ],
    });
    assert.equal(next.content[0].text, 'reply to: sunny');
  });

  test('errors raise the SDK error classes: 529 OverloadedError, 429 RateLimitError with retry-after, 401, 400', async () => {
    fake.next({ error: 'overloaded' });
    await assert.rejects(client.messages.create({ model: 'c', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] }), (e) => {
      assert.ok(e instanceof Anthropic.OverloadedError, e.constructor.name);
      assert.ok(e instanceof Anthropic.InternalServerError);
      assert.equal(e.status, 529);
      assert.equal(e.type, 'overloaded_error');
      return true;
    });
    assert.deepEqual(fake.requests[0].responseBody.error, { type: 'overloaded_error', message: 'Overloaded' });
    assert.deepEqual(shapeOf(fake.requests[0].responseBody), shapeOf(fixtureJSON('error-overloaded.json')));

    fake.next({ status: 429, retryAfter: 7 });
    await assert.rejects(
      client.messages.create({ model: 'c', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] }),
      (e) => e instanceof Anthropic.RateLimitError && e.headers.get('retry-after') === '7' && e.type === 'rate_limit_error'
    );
    fake.next({ status: 500 });
    await assert.rejects(client.messages.create({ model: 'c', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] }), (e) => e instanceof Anthropic.InternalServerError && e.type === 'api_error');
    fake.next({ status: 418, body: 'teapot', headers: { 'x-extra': '1' } });
    const verbatim = await messages({ model: 'c', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] });
    assert.equal(verbatim.status, 418);
    assert.equal(verbatim.text, 'teapot');
    assert.equal(verbatim.headers['x-extra'], '1');

    const bad = new Anthropic({ baseURL: fake.baseURL, apiKey: 'sk-wrong', maxRetries: 0 });
    await assert.rejects(bad.messages.create({ model: 'c', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] }), (e) => e instanceof Anthropic.AuthenticationError && e.type === 'authentication_error');
    const noKey = await postJSON(`${fake.baseURL}/v1/messages`, { model: 'c', max_tokens: 1, messages: [{ role: 'user', content: 'x' }] }, { headers: { 'anthropic-version': '2023-06-01' } });
    assert.equal(noKey.status, 401);
    assert.equal(noKey.json.error.message, 'x-api-key header is required');
    const noVersion = await postJSON(`${fake.baseURL}/v1/messages`, { model: 'c', max_tokens: 1, messages: [{ role: 'user', content: 'x' }] }, { headers: { 'x-api-key': 'sk-ant-fake' } });
    assert.equal(noVersion.status, 400);
    assert.equal(noVersion.json.error.message, 'anthropic-version: header is required');

    const noMax = await messages({ model: 'c', messages: [{ role: 'user', content: 'x' }] });
    assert.equal(noMax.status, 400);
    assert.deepEqual(noMax.json.error, fixtureJSON('error-invalid-request.json').error);
    assert.deepEqual(shapeOf(noMax.json), shapeOf(fixtureJSON('error-invalid-request.json')));
  });

  test('validation as Anthropic does it: model, roles, first message, system, tool pairing, extra fields', async () => {
    const cases = [
      [{ max_tokens: 5, messages: [{ role: 'user', content: 'x' }] }, /^model: Field required$/],
      [{ model: 'c', max_tokens: 0, messages: [{ role: 'user', content: 'x' }] }, /^max_tokens: /],
      [{ model: 'c', max_tokens: 5, messages: [] }, /at least one message/],
      [{ model: 'c', max_tokens: 5, messages: [{ role: 'system', content: 's' }, { role: 'user', content: 'x' }] }, /top-level `system` parameter/],
      [{ model: 'c', max_tokens: 5, messages: [{ role: 'tool', content: 'x' }] }, /^messages\.0\.role: /],
      [{ model: 'c', max_tokens: 5, messages: [{ role: 'assistant', content: 'x' }] }, /first message must use the "user" role/],
      [{ model: 'c', max_tokens: 5, messages: [{ role: 'user', content: '' }] }, /non-empty content/],
      [{ model: 'c', max_tokens: 5, n: 2, messages: [{ role: 'user', content: 'x' }] }, /^n: Extra inputs are not permitted$/],
      [{ model: 'c', max_tokens: 5, temperature: 1.5, messages: [{ role: 'user', content: 'x' }] }, /^temperature: /],
      [{ model: 'c', max_tokens: 5, messages: [{ role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: 'r' }] }] }, /unexpected `tool_use_id`/],
      [
        {
          model: 'c',
          max_tokens: 5,
          messages: [
            { role: 'user', content: 'x' },
            { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_1', name: 'f', input: {} }] },
            { role: 'user', content: 'no result' },
          ],
        },
        /without `tool_result` blocks/,
      ],
      [{ model: 'c', max_tokens: 5, tools: [{ name: 'f' }], messages: [{ role: 'user', content: 'x' }] }, /^tools\.0\.custom\.input_schema: Field required$/],
      [{ model: 'c', max_tokens: 5, messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'http://x' } }] }] }, /Input tag 'image_url'/],
      [{ model: 'c', max_tokens: 5, messages: [{ role: 'user', content: [{ type: 'image', source: { type: 'base64', media_type: 'image/bmp', data: 'AA==' } }] }] }, /media_type/],
    ];
    for (const [body, re] of cases) {
      const r = await messages(body);
      assert.equal(r.status, 400, `${JSON.stringify(body)} → ${r.text}`);
      assert.equal(r.json.type, 'error');
      assert.equal(r.json.error.type, 'invalid_request_error');
      assert.match(r.json.error.message, re);
    }
    // consecutive same-role messages are accepted (Anthropic merges them), so is an assistant prefill
    const ok = await messages({ model: 'c', max_tokens: 5, messages: [{ role: 'user', content: 'a' }, { role: 'user', content: 'b' }, { role: 'assistant', content: '' }] });
    assert.equal(ok.status, 200, ok.text);
    await assert.rejects(client.messages.create({ model: 'c', max_tokens: 5, messages: [{ role: 'system', content: 'x' }] }), (e) => e instanceof Anthropic.BadRequestError && e.type === 'invalid_request_error');
  });

  test('mid-stream faults: an error event (the SDK raises it) and a cut after n events', async () => {
    fake.next({ errorEventAfter: 4, text: 'one two three' });
    const s = client.messages.stream({ model: 'c', max_tokens: 100, messages: [{ role: 'user', content: 'x' }] });
    let text = '';
    s.on('text', (t) => (text += t));
    await assert.rejects(s.finalMessage(), (e) => e instanceof Anthropic.APIError && e.type === 'overloaded_error');
    assert.equal(text, 'one'); // message_start, content_block_start, ping, one delta
    assert.equal(fake.requests[0].sentEvents, 4);

    fake.next({ errorEventAfter: 4 });
    const raw = await messages({ model: 'c', max_tokens: 100, stream: true, messages: [{ role: 'user', content: 'x' }] });
    assert.deepEqual(streamShape(parseSSE(raw.text)), streamShape(fixtureSSE('stream-error.txt')));

    fake.next({ cutAfterEvents: 5, text: 'one two three' });
    const s2 = client.messages.stream({ model: 'c', max_tokens: 100, messages: [{ role: 'user', content: 'x' }] });
    let text2 = '';
    s2.on('text', (t) => (text2 += t));
    await assert.rejects(s2.finalMessage());
    assert.equal(text2, 'one two');
    assert.equal(fake.requests.at(-1).finished, false);
  });

  test('images arrive (base64 and url), thinking comes first with a signature', async () => {
    const m = await client.messages.create({
      model: 'c',
      max_tokens: 100,
      messages: [
        {
          role: 'user',
          content: [
            { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } },
            { type: 'image', source: { type: 'url', url: 'https://example.com/a.jpg' } },
            { type: 'text', text: 'what is this' },
          ],
        },
      ],
    });
    assert.equal(m.content[0].text, 'reply to: what is this (images: 2)');

    fake.next({ thinking: true });
    const fm = await client.messages.stream({ model: 'c', max_tokens: 100, messages: [{ role: 'user', content: 'hi' }] }).finalMessage();
    assert.deepEqual(
      fm.content.map((c) => c.type),
      ['thinking', 'text']
    );
    assert.ok(fm.content[0].thinking.length > 0);
    assert.ok(fm.content[0].signature.length > 0);
    assert.equal(fm.content[1].text, 'reply to: hi');
    // thinking enabled in the request has the same effect
    const t = await client.messages.create({ model: 'c', max_tokens: 2000, thinking: { type: 'enabled', budget_tokens: 1024 }, messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(t.content[0].type, 'thinking');
  });

  test('max_tokens truncates (stop_reason max_tokens), stop_sequences cut, delayMs delays, models list', async () => {
    const m = await client.messages.create({ model: 'c', max_tokens: 2, messages: [{ role: 'user', content: 'a b c' }] });
    assert.equal(m.content[0].text, 'reply to:');
    assert.equal(m.stop_reason, 'max_tokens');
    assert.equal(m.usage.output_tokens, 2);
    const s = await client.messages.create({ model: 'c', max_tokens: 50, stop_sequences: ['c'], messages: [{ role: 'user', content: 'a b c d' }] });
    assert.equal(s.content[0].text, 'reply to: a b ');
    assert.equal(s.stop_reason, 'stop_sequence');
    assert.equal(s.stop_sequence, 'c');

    fake.next({ delayMs: 300 });
    const t0 = performance.now();
    await client.messages.create({ model: 'c', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] });
    assert.ok(performance.now() - t0 >= 290);

    const ids = [];
    for await (const model of client.models.list()) ids.push(model.id);
    assert.deepEqual(ids, ['claude-sonnet-4-5', 'claude-haiku-4-5']);
  });
});
