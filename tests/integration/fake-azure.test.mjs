// fake-azure.test.mjs — the fake OpenAI server in its Azure OpenAI mode (tests/fakes/openai.mjs,
// startFakeOpenAI({azure})) spoken to by the official openai SDK's AzureOpenAI client, and its
// embeddings route by the plain OpenAI client: if the SDKs cannot use them, every gateway test
// built on them would prove nothing.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI, { AzureOpenAI } from 'openai';

import { fakeEmbedding, startFakeOpenAI } from '../fakes/openai.mjs';
import { collectStream, postJSON, sseData } from '../lib/http.mjs';

const VERSION = '2024-10-21';

describe('fake Azure OpenAI server (startFakeOpenAI({azure}))', () => {
  let fake;
  let client;
  before(async () => {
    fake = await startFakeOpenAI({ apiKey: 'az-key', azure: { deployment: ['my-deploy', 'embed-deploy'], apiVersion: VERSION } });
    client = new AzureOpenAI({ endpoint: fake.url, apiKey: 'az-key', apiVersion: VERSION, deployment: 'my-deploy', maxRetries: 0 });
  });
  after(async () => fake && (await fake.close()));
  beforeEach(() => fake.reset());

  test('chat completions under /openai/deployments/{deployment} with api-version and api-key', async () => {
    const c = await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'abc' }] });
    assert.equal(c.choices[0].message.content, 'reply to: abc');
    assert.equal(c.prompt_filter_results[0].content_filter_results.hate.filtered, false);
    const rec = fake.chatRequests()[0];
    assert.equal(rec.path, `/openai/deployments/my-deploy/chat/completions?api-version=${VERSION}`);
    assert.equal(rec.headers['api-key'], 'az-key');
    assert.equal(rec.deployment, 'my-deploy');
    assert.equal(rec.apiVersion, VERSION);
    assert.equal(fake.baseURL, `${fake.url}/openai`);
  });

  test('a stream opens with the content filter chunk (no choices) and parses in the SDK', async () => {
    const s = await client.chat.completions.create({ model: 'gpt-4o', stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'a b' }] });
    const { text, chunks } = await collectStream(s);
    assert.equal(text, 'reply to: a b');
    assert.deepEqual(chunks[0].choices, []);
    assert.ok(chunks[0].prompt_filter_results);
    assert.equal(chunks[1].choices[0].delta.role, 'assistant');
    assert.equal(chunks.at(-1).usage.total_tokens, fake.requests[0].responseUsage.total_tokens);
    fake.next({ cutAfterChunks: 1, text: 'one two three' });
    const cut = await client.chat.completions.create({ model: 'm', stream: true, messages: [{ role: 'user', content: 'x' }] });
    let got = '';
    await assert.rejects(async () => {
      for await (const ch of cut) got += ch.choices[0]?.delta?.content || '';
    });
    assert.equal(got, 'one');
  });

  test('embeddings under the deployment (base64 as the SDK asks, and float)', async () => {
    const e = new AzureOpenAI({ endpoint: fake.url, apiKey: 'az-key', apiVersion: VERSION, deployment: 'embed-deploy', maxRetries: 0 });
    const r = await e.embeddings.create({ model: 'text-embedding-3-small', input: ['one', 'two'] });
    assert.equal(r.data.length, 2);
    assert.deepEqual(
      r.data[0].embedding.map((x) => Math.round(x * 1e5)),
      fakeEmbedding('one').map((x) => Math.round(x * 1e5))
    );
    assert.equal(fake.embeddingRequests()[0].deployment, 'embed-deploy');
    const raw = await postJSON(`${fake.url}/openai/deployments/embed-deploy/embeddings?api-version=${VERSION}`, { input: 'one', dimensions: 16 }, { headers: { 'api-key': 'az-key' } });
    assert.equal(raw.status, 200, raw.text);
    assert.deepEqual(raw.json.data[0].embedding, fakeEmbedding('one', 16));
    assert.equal(raw.json.model, 'embed-deploy');
  });

  test('Azure refusals: no api-key 401, no api-version 404, other api-version 400, unknown deployment 404', async () => {
    const body = { messages: [{ role: 'user', content: 'x' }] };
    const path = (dep, q) => `${fake.url}/openai/deployments/${dep}/chat/completions${q}`;
    const noKey = await postJSON(path('my-deploy', `?api-version=${VERSION}`), body);
    assert.equal(noKey.status, 401);
    assert.equal(noKey.json.error.code, '401');
    const wrongKey = new AzureOpenAI({ endpoint: fake.url, apiKey: 'nope', apiVersion: VERSION, deployment: 'my-deploy', maxRetries: 0 });
    await assert.rejects(wrongKey.chat.completions.create({ model: 'm', ...body }), (e) => e instanceof OpenAI.AuthenticationError);
    // a Bearer token is not an api-key
    const bearer = await postJSON(path('my-deploy', `?api-version=${VERSION}`), body, { headers: { authorization: 'Bearer az-key' } });
    assert.equal(bearer.status, 401);
    const noVersion = await postJSON(path('my-deploy', ''), body, { headers: { 'api-key': 'az-key' } });
    assert.equal(noVersion.status, 404);
    assert.deepEqual(noVersion.json, { error: { code: '404', message: 'Resource not found' } });
    const oldVersion = await postJSON(path('my-deploy', '?api-version=2023-01-01'), body, { headers: { 'api-key': 'az-key' } });
    assert.equal(oldVersion.status, 400);
    const other = await postJSON(path('other', `?api-version=${VERSION}`), body, { headers: { 'api-key': 'az-key' } });
    assert.equal(other.status, 404);
    assert.equal(other.json.error.code, 'DeploymentNotFound');
    const openaiPath = await postJSON(`${fake.url}/v1/chat/completions`, { model: 'm', ...body }, { headers: { 'api-key': 'az-key' } });
    assert.equal(openaiPath.status, 404);
    // behaviours apply as in the OpenAI mode
    fake.next({ status: 429, headers: { 'retry-after': '3' } });
    await assert.rejects(client.chat.completions.create({ model: 'm', ...body }), (e) => e instanceof OpenAI.RateLimitError && e.headers.get('retry-after') === '3');
  });
});

describe('fake OpenAI server: /v1/embeddings', () => {
  let fake;
  before(async () => {
    fake = await startFakeOpenAI({ apiKey: 'sk-fake' });
  });
  after(async () => fake && (await fake.close()));

  test('the SDK gets deterministic vectors; the wire has the OpenAI shape', async () => {
    const client = new OpenAI({ baseURL: fake.baseURL, apiKey: 'sk-fake', maxRetries: 0 });
    const r = await client.embeddings.create({ model: 'text-embedding-3-small', input: 'hello', dimensions: 12 });
    assert.equal(r.data[0].embedding.length, 12);
    assert.equal(r.model, 'text-embedding-3-small');
    assert.equal(r.usage.prompt_tokens, 2);
    const raw = await postJSON(`${fake.baseURL}/embeddings`, { model: 'e', input: ['a', 'a'], encoding_format: 'float' }, { headers: { authorization: 'Bearer sk-fake' } });
    assert.deepEqual(raw.json.data[0].embedding, raw.json.data[1].embedding);
    assert.deepEqual(Object.keys(raw.json).sort(), ['data', 'model', 'object', 'usage']);
    assert.equal(raw.json.data[1].index, 1);
    const bad = await postJSON(`${fake.baseURL}/embeddings`, { model: 'e' }, { headers: { authorization: 'Bearer sk-fake' } });
    assert.equal(bad.status, 400);
    assert.equal(fake.embeddingRequests().length, 3);
    // the stream framing of the plain mode is unchanged (no Azure filter chunk)
    const s = await postJSON(`${fake.baseURL}/chat/completions`, { model: 'm', stream: true, messages: [{ role: 'user', content: 'q' }] }, { headers: { authorization: 'Bearer sk-fake' } });
    assert.ok(JSON.parse(sseData(s.text)[0]).choices[0].delta.role === 'assistant');
  });
});
