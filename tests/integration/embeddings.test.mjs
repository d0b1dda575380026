// embeddings.test.mjs — POST {prefix}/embeddings with the openai SDK in front of an
// OpenAI-compatible target, an AzureOpenAI deployment and Gemini (batchEmbedContents, translated
// back to OpenAI's list); Mock and Anthropic have no embeddings API (400 naming the model); bad
// input is refused before anything goes upstream; an upstream failure is the caller's error.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

import { startFakeAnthropic } from '../fakes/anthropic.mjs';
import { geminiEmbedding, startFakeGemini } from '../fakes/gemini.mjs';
import { fakeEmbedding, startFakeOpenAI } from '../fakes/openai.mjs';
import { startGateway, withLogs } from '../lib/gateway.mjs';
import { postJSON } from '../lib/http.mjs';

const near = (a, b) => a.length === b.length && a.every((x, i) => Math.abs(x - b[i]) < 1e-6);

describe('embeddings: OpenAI family, Azure, Gemini', () => {
  let compat;
  let azure;
  let gemini;
  let claude;
  let gw;
  let client;

  before(async () => {
    compat = await startFakeOpenAI();
    azure = await startFakeOpenAI({ azure: { deployment: 'emb-deploy', apiVersion: '2024-10-21' }, apiKey: 'az-key' });
    gemini = await startFakeGemini({ apiKey: 'g-key' });
    claude = await startFakeAnthropic();
    gw = await startGateway({
      manifests: `
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-embeddings}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - {name: e-compat, type: OpenAICompatible, config: {endpoint: "${compat.baseURL}", modelName: text-embedding-3-small}}
  - name: e-azure
    type: AzureOpenAI
    config: {endpoint: "${azure.url}", deployment: emb-deploy, apiVersion: "2024-10-21", apiKeyRef: {name: keys, key: azure}}
  - name: e-gemini
    type: Gemini
    config: {endpoint: "${gemini.baseURL}", modelName: text-embedding-004, apiKeyRef: {name: keys, key: gemini}}
  - {name: e-mock, type: Mock}
  - name: e-claude
    type: Anthropic
    config: {endpoint: "${claude.baseURL}", modelName: claude-x, apiKeyRef: {name: keys, key: anthropic}}
  authentication: {type: None}
---
apiVersion: v1
kind: Secret
metadata: {name: keys}
stringData: {azure: az-key, gemini: g-key, anthropic: a-key}
`,
    });
    client = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  });

  after(async () => {
    if (gw) await gw.stop();
    for (const f of [compat, azure, gemini, claude]) if (f) await f.close();
  });

  beforeEach(() => {
    for (const f of [compat, azure, gemini, claude]) f.reset();
  });

  const logs = () => gw;

  test(
    'OpenAI-compatible: the request goes as sent with the provider model; the answer is relayed',
    withLogs(logs, async () => {
      const res = await client.embeddings.create({ model: 'e-compat', input: ['alpha', 'beta'], encoding_format: 'float' });
      assert.equal(res.data.length, 2);
      assert.ok(near(res.data[0].embedding, fakeEmbedding('alpha', 8)));
      assert.ok(near(res.data[1].embedding, fakeEmbedding('beta', 8)));
      const [req] = compat.embeddingRequests();
      assert.equal(req.body.model, 'text-embedding-3-small');
      assert.deepEqual(req.body.input, ['alpha', 'beta']);
      assert.ok(res.usage.prompt_tokens > 0);
    })
  );

  test(
    'AzureOpenAI: the deployment URL, api-version and api-key header',
    withLogs(logs, async () => {
      const res = await client.embeddings.create({ model: 'e-azure', input: 'gamma', encoding_format: 'float' });
      assert.equal(res.data.length, 1);
      assert.ok(near(res.data[0].embedding, fakeEmbedding('gamma', 8)));
      const [req] = azure.embeddingRequests();
      assert.equal(req.deployment, 'emb-deploy');
      assert.equal(req.apiVersion, '2024-10-21');
      assert.equal(req.headers['api-key'], 'az-key');
      assert.equal(req.headers.authorization, undefined);
    })
  );

  test(
    'Gemini: batchEmbedContents with one request per input, dimensions as outputDimensionality, OpenAI list back',
    withLogs(logs, async () => {
      const res = await client.embeddings.create({ model: 'e-gemini', input: ['one', 'two', 'three'], dimensions: 4, encoding_format: 'float' });
      assert.equal(res.object, 'list');
      assert.equal(res.model, 'e-gemini');
      assert.deepEqual(
        res.data.map((d) => d.index),
        [0, 1, 2]
      );
      assert.ok(near(res.data[2].embedding, geminiEmbedding('three', 4)));
      const [req] = gemini.embedRequests();
      assert.match(req.path, /\/v1beta\/models\/text-embedding-004:batchEmbedContents$/);
      assert.equal(req.headers['x-goog-api-key'], 'g-key');
      assert.equal(req.body.requests.length, 3);
      assert.equal(req.body.requests[0].model, 'models/text-embedding-004');
      assert.equal(req.body.requests[0].outputDimensionality, 4);
      assert.deepEqual(req.body.requests[1].content.parts, [{ text: 'two' }]);
    })
  );

  test(
    'Mock and Anthropic targets have no embeddings API: 400 model_not_supported, nothing sent',
    withLogs(logs, async () => {
      for (const model of ['e-mock', 'e-claude']) {
        const res = await postJSON(`${gw.url}/v1/embeddings`, { model, input: 'x' });
        assert.equal(res.status, 400, res.text);
        assert.equal(res.json.error.code, 'model_not_supported');
        assert.equal(res.json.error.param, 'model');
        assert.match(res.json.error.message, new RegExp(model));
      }
      assert.equal(claude.requests.length, 0);
    })
  );

  test(
    'bad input is refused naming the field; an unknown model is 404',
    withLogs(logs, async () => {
      const cases = [
        [{ input: 'x' }, 400, 'model'],
        [{ model: 'e-compat' }, 400, 'input'],
        [{ model: 'e-compat', input: [] }, 400, 'input'],
        [{ model: 'e-compat', input: 42 }, 400, 'input'],
        [{ model: 7, input: 'x' }, 400, 'model'],
      ];
      for (const [body, status, param] of cases) {
        const res = await postJSON(`${gw.url}/v1/embeddings`, body);
        assert.equal(res.status, status, `${JSON.stringify(body)}: ${res.text}`);
        assert.equal(res.json.error.param, param, res.text);
      }
      const unknown = await postJSON(`${gw.url}/v1/embeddings`, { model: 'nope', input: 'x' });
      assert.equal(unknown.status, 404);
      assert.equal(unknown.json.error.code, 'model_not_found');
      assert.equal(compat.requests.length, 0);
    })
  );

  test(
    'a Gemini 429 is the caller 429 in OpenAI form',
    withLogs(logs, async () => {
      gemini.next({ status: 429 });
      const res = await postJSON(`${gw.url}/v1/embeddings`, { model: 'e-gemini', input: 'x' });
      assert.equal(res.status, 429, res.text);
      assert.equal(res.json.error.code, 'rate_limit_exceeded');
    })
  );
});
