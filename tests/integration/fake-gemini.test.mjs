// fake-gemini.test.mjs — the fake Gemini server itself (tests/fakes/gemini.mjs), spoken to with
// plain fetch (there is no Gemini SDK among the test dependencies): its answers must have the
// shapes of the documented payloads in tests/fakes/fixtures/gemini/ and its stream the framing
// Google uses, or every gateway test built on it would prove nothing.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { geminiEmbedding, geminiPromptTokens, startFakeGemini } from '../fakes/gemini.mjs';
import { parseSSE, shapeOf } from '../fakes/server.mjs';
import { within } from '../lib/http.mjs';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fakes', 'fixtures', 'gemini');
const fixture = (name) => fs.readFileSync(path.join(FIXTURES, name), 'utf8');
const fixtureJSON = (name) => JSON.parse(fixture(name));

const WEATHER = {
  functionDeclarations: [
    { name: 'get_weather', description: 'The weather', parameters: { type: 'OBJECT', properties: { location: { type: 'STRING' } }, required: ['location'] } },
  ],
};
const KEY = 'g-fake-key';
const user = (text) => ({ role: 'user', parts: [{ text }] });

describe('fake Gemini server (tests/fakes/gemini.mjs)', () => {
  let fake;
  const call = async (model, method, body, { key = KEY, query = '', headers = {} } = {}) => {
    const res = await fetch(`${fake.baseURL}/v1beta/models/${model}:${method}${query}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(key ? { 'x-goog-api-key': key } : {}), ...headers },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, headers: res.headers, text, json };
  };
  before(async () => {
    fake = await startFakeGemini({ apiKey: KEY });
  });
  after(async () => fake && (await fake.close()));
  beforeEach(() => fake.reset());

  test('generateContent: the documented shape, usage, recorded request', async () => {
    const body = { systemInstruction: { parts: [{ text: 'be brief' }] }, contents: [user('hello there')], generationConfig: { temperature: 0.5 } };
    const r = await call('gemini-2.5-flash', 'generateContent', body);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(shapeOf(r.json), shapeOf(fixtureJSON('generate-content.json')));
    const c = r.json.candidates[0];
    assert.deepEqual(c.content, { parts: [{ text: 'reply to: hello there' }], role: 'model' });
    assert.equal(c.finishReason, 'STOP');
    assert.deepEqual(
      [r.json.usageMetadata.promptTokenCount, r.json.usageMetadata.candidatesTokenCount, r.json.usageMetadata.totalTokenCount],
      [4, 4, 8]
    );
    assert.equal(geminiPromptTokens(body), 4);
    assert.equal(r.json.modelVersion, 'gemini-2.5-flash');
    const rec = fake.generateRequests()[0];
    assert.deepEqual(rec.body, body);
    assert.equal(rec.headers['x-goog-api-key'], KEY);
    assert.equal(rec.model, 'gemini-2.5-flash');
    assert.equal(rec.methodName, 'generateContent');
    // snake_case field names are accepted, as by Google; a multi-turn conversation replies to the last user turn
    const r2 = await call('m', 'generateContent', { system_instruction: { parts: [{ text: 's' }] }, contents: [user('a'), { role: 'model', parts: [{ text: 'b' }] }, user('c')], generation_config: { max_output_tokens: 50 } });
    assert.equal(r2.json.candidates[0].content.parts[0].text, 'reply to: c');
    // the key may come as ?key=
    const r3 = await call('m', 'generateContent', { contents: [user('q')] }, { key: null, query: `?key=${KEY}` });
    assert.equal(r3.status, 200);
  });

  test('streamGenerateContent?alt=sse: data events with CRLF CRLF, text split, the last with finishReason and usage', async () => {
    const r = await call('gemini-2.5-flash', 'streamGenerateContent', { contents: [user('a b c')] }, { query: '?alt=sse' });
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /^text\/event-stream/);
    assert.ok(r.text.endsWith('}\r\n\r\n'));
    assert.equal(r.text.split('\r\n\r\n').length - 1, fake.requests[0].sentEvents);
    assert.ok(!/(^|[^\r])\n/.test(r.text), 'every line break is CRLF');
    const events = parseSSE(r.text).map((e) => JSON.parse(e.data));
    assert.ok(events.length >= 3, 'several chunks');
    assert.equal(events.map((e) => e.candidates[0].content.parts[0].text).join(''), 'reply to: a b c');
    for (const e of events.slice(0, -1)) {
      assert.equal(e.candidates[0].finishReason, undefined);
      assert.equal(e.usageMetadata, undefined);
    }
    const last = events.at(-1);
    assert.equal(last.candidates[0].finishReason, 'STOP');
    assert.deepEqual([last.usageMetadata.promptTokenCount, last.usageMetadata.candidatesTokenCount], [3, 5]);
    const doc = parseSSE(fixture('stream.txt')).map((e) => JSON.parse(e.data));
    assert.deepEqual(shapeOf(events[0]), shapeOf(doc[0]));
    assert.deepEqual(shapeOf(last), shapeOf(doc.at(-1)));

    // without alt=sse: a JSON array of the same chunks
    const arr = await call('m', 'streamGenerateContent', { contents: [user('x y')] });
    assert.ok(Array.isArray(arr.json), arr.text);
    assert.equal(arr.json.map((e) => e.candidates[0].content.parts[0].text).join(''), 'reply to: x y');
    // usageEveryChunk: usage on every chunk, counted so far
    fake.next({ usageEveryChunk: true });
    const u = parseSSE((await call('m', 'streamGenerateContent', { contents: [user('x')] }, { query: '?alt=sse' })).text).map((e) => JSON.parse(e.data));
    assert.deepEqual(
      u.map((e) => e.usageMetadata.candidatesTokenCount),
      [1, 2, 3]
    );
  });

  test('tools: "use the tool" gets a functionCall part, whole, also in a stream', async () => {
    const r = await call('m', 'generateContent', { contents: [user('please use the tool')], tools: [WEATHER] });
    assert.deepEqual(shapeOf(r.json), shapeOf(fixtureJSON('function-call.json')));
    assert.deepEqual(r.json.candidates[0].content.parts, [{ functionCall: { name: 'get_weather', args: { location: 'location-1' } } }]);
    assert.equal(r.json.candidates[0].finishReason, 'STOP');
    const plain = await call('m', 'generateContent', { contents: [user('hi')], tools: [WEATHER] });
    assert.equal(plain.json.candidates[0].content.parts[0].text, 'reply to: hi');
    const any = await call('m', 'generateContent', { contents: [user('hi')], tools: [WEATHER], toolConfig: { functionCallingConfig: { mode: 'ANY' } } });
    assert.equal(any.json.candidates[0].content.parts[0].functionCall.name, 'get_weather');
    fake.next({ tool: { name: 'get_weather', args: { location: 'Rome' } } });
    const s = await call('m', 'streamGenerateContent', { contents: [user('hi')], tools: [WEATHER] }, { query: '?alt=sse' });
    const events = parseSSE(s.text).map((e) => JSON.parse(e.data));
    assert.equal(events.length, 1);
    assert.deepEqual(events[0].candidates[0].content.parts[0].functionCall, { name: 'get_weather', args: { location: 'Rome' } });
    assert.equal(events[0].candidates[0].finishReason, 'STOP');
    // the round trip: the function response is what the answer replies to
    const back = await call('m', 'generateContent', {
      contents: [user('use the tool'), { role: 'model', parts: [{ functionCall: { name: 'get_weather', args: { location: 'Rome' } } }] }, { role: 'user', parts: [{ functionResponse: { name: 'get_weather', response: { result: 'sunny' } } }] }],
      tools: [WEATHER],
    });
    assert.equal(back.json.candidates[0].content.parts[0].text, 'reply to: {"result":"sunny"}');
  });

  test('images in inlineData/fileData are counted; maxOutputTokens and stopSequences apply', async () => {
    const r = await call('m', 'generateContent', {
      contents: [{ role: 'user', parts: [{ inlineData: { mimeType: 'image/png', data: 'iVBORw0KGgo=' } }, { fileData: { mimeType: 'image/jpeg', fileUri: 'https://x/a.jpg' } }, { text: 'what' }] }],
    });
    assert.equal(r.json.candidates[0].content.parts[0].text, 'reply to: what (images: 2)');
    const t = await call('m', 'generateContent', { contents: [user('a b c')], generationConfig: { maxOutputTokens: 2 } });
    assert.equal(t.json.candidates[0].content.parts[0].text, 'reply to:');
    assert.equal(t.json.candidates[0].finishReason, 'MAX_TOKENS');
    const st = await call('m', 'generateContent', { contents: [user('a b c')], generationConfig: { stopSequences: [' b'] } });
    assert.equal(st.json.candidates[0].content.parts[0].text, 'reply to: a');
  });

  test('embeddings: batchEmbedContents and embedContent give deterministic vectors', async () => {
    const body = { requests: ['one', 'two', 'one'].map((text) => ({ model: 'models/text-embedding-004', content: { parts: [{ text }] } })) };
    const r = await call('text-embedding-004', 'batchEmbedContents', body);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(shapeOf(r.json), shapeOf(fixtureJSON('batch-embed.json')));
    const [a, b, c] = r.json.embeddings.map((e) => e.values);
    assert.equal(a.length, 8);
    assert.deepEqual(a, c);
    assert.notDeepEqual(a, b);
    assert.deepEqual(a, geminiEmbedding('one'));
    for (const v of a) assert.ok(v >= -1 && v <= 1);
    const dims = await call('text-embedding-004', 'batchEmbedContents', { requests: [{ model: 'models/text-embedding-004', content: { parts: [{ text: 'x' }] }, outputDimensionality: 40 }] });
    assert.equal(dims.json.embeddings[0].values.length, 40);
    const one = await call('text-embedding-004', 'embedContent', { content: { parts: [{ text: 'one' }] } });
    assert.deepEqual(one.json.embedding.values, a);
    const wrongModel = await call('text-embedding-004', 'batchEmbedContents', { requests: [{ model: 'models/other', content: { parts: [{ text: 'x' }] } }] });
    assert.equal(wrongModel.status, 400);
    assert.equal(wrongModel.json.error.status, 'INVALID_ARGUMENT');
    assert.equal(fake.embedRequests().length, 4);
  });

  test('errors: key checks, validation, 429 RESOURCE_EXHAUSTED, 503 UNAVAILABLE, verbatim', async () => {
    const noKey = await call('m', 'generateContent', { contents: [user('x')] }, { key: null });
    assert.equal(noKey.status, 403);
    assert.equal(noKey.json.error.status, 'PERMISSION_DENIED');
    const badKey = await call('m', 'generateContent', { contents: [user('x')] }, { key: 'nope' });
    assert.equal(badKey.status, 400);
    assert.equal(badKey.json.error.details[0].reason, 'API_KEY_INVALID');

    const cases = [
      ['{not json', /Invalid JSON payload/],
      [{ messages: [{ role: 'user', content: 'x' }] }, /Unknown name "messages"/],
      [{ contents: [] }, /contents is not specified/],
      [{ contents: [{ role: 'assistant', parts: [{ text: 'x' }] }] }, /valid role: user, model/],
      [{ contents: [{ role: 'system', parts: [{ text: 'x' }] }] }, /valid role: user, model/],
      [{ contents: [{ role: 'user', parts: [] }] }, /must not be empty/],
      [{ contents: [{ role: 'user', parts: [{ image_url: 'x' }] }] }, /Unknown name "image_url" at 'contents\[0\]\.parts\[0\]'/],
      [{ contents: [user('x')], generationConfig: { max_tokens: 5 } }, /Unknown name "max_tokens" at 'generation_config'/],
      [{ contents: [user('x')], generationConfig: { temperature: 3 } }, /temperature/],
    ];
    for (const [body, re] of cases) {
      const r = await call('m', 'generateContent', body);
      assert.equal(r.status, 400, `${JSON.stringify(body)} → ${r.text}`);
      assert.equal(r.json.error.code, 400);
      assert.equal(r.json.error.status, 'INVALID_ARGUMENT');
      assert.match(r.json.error.message, re);
    }
    const notFound = await call('m', 'chat', { contents: [user('x')] });
    assert.equal(notFound.status, 404);

    fake.next({ status: 429 }, { status: 503 }, { status: 429, retryDelay: '17s' }, { status: 500, body: 'oops', headers: { 'x-extra': '1' } });
    const r429 = await call('m', 'generateContent', { contents: [user('x')] });
    assert.equal(r429.status, 429);
    assert.deepEqual(r429.json, fixtureJSON('error-429.json'));
    const r503 = await call('m', 'streamGenerateContent', { contents: [user('x')] }, { query: '?alt=sse' });
    assert.equal(r503.status, 503);
    assert.deepEqual(r503.json, fixtureJSON('error-503.json'));
    const retry = await call('m', 'generateContent', { contents: [user('x')] });
    assert.equal(retry.json.error.details[0].retryDelay, '17s');
    const verbatim = await call('m', 'generateContent', { contents: [user('x')] });
    assert.equal(verbatim.status, 500);
    assert.equal(verbatim.text, 'oops');
    assert.equal(verbatim.headers.get('x-extra'), '1');
  });

  test('faults: cutAfterEvents destroys the stream after n chunks; delayMs; stall until the client leaves', async () => {
    fake.next({ cutAfterEvents: 2 });
    const res = await fetch(`${fake.baseURL}/v1beta/models/m:streamGenerateContent?alt=sse`, {
      method: 'POST',
      headers: { 'x-goog-api-key': KEY, 'content-type': 'application/json' },
      body: JSON.stringify({ contents: [user('one two three')] }),
    });
    let got = '';
    await assert.rejects(async () => {
      for await (const piece of res.body) got += Buffer.from(piece).toString('utf8');
    });
    assert.equal(parseSSE(got).length, 2);
    assert.equal(fake.requests[0].finished, false);

    fake.next({ delayMs: 300 });
    const t0 = performance.now();
    await call('m', 'generateContent', { contents: [user('x')] });
    assert.ok(performance.now() - t0 >= 290);

    fake.next({ stallAfterEvents: 1 });
    const ac = new AbortController();
    const s = await fetch(`${fake.baseURL}/v1beta/models/m:streamGenerateContent?alt=sse`, {
      method: 'POST',
      headers: { 'x-goog-api-key': KEY, 'content-type': 'application/json' },
      body: JSON.stringify({ contents: [user('a b')] }),
      signal: ac.signal,
    });
    const reader = s.body.getReader();
    await reader.read();
    ac.abort();
    const rec = fake.requests.at(-1);
    await within(rec.closed, 5000, 'the fake to see the close');
    assert.equal(rec.clientClosedEarly, true);
    assert.equal(rec.sentEvents, 1);
  });
});
