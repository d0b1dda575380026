// mock.test.mjs — the Mock target answers from the gateway itself: echo or canned text,
// chat.completion / chat.completion.chunk shapes, chunk counts, usage, through the `openai` SDK.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

import { startGateway, withLogs } from '../lib/gateway.mjs';
import { collectStream, postJSON, sseData } from '../lib/http.mjs';
import { chatPromptTokens, textTokens as tok } from '../lib/tokens.mjs';

const CANNED = 'The quick brown fox jumps over the lazy dog, twice over.';

describe('Mock target', () => {
  let gw;
  let client;

  before(async () => {
    gw = await startGateway({
      manifests: `
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-mock}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - name: echo
    type: Mock
    config: {modelName: echo-model-1}
  - name: canned
    aliases: [canned-alias]
    type: Mock
    config:
      mock: {text: "${CANNED}", chunks: 5}
  routes:
  - name: main
    pathPrefix: /v1
    backends: [{target: echo}, {target: canned}]
  authentication: {type: None}
`,
    });
    client = new OpenAI({ baseURL: gw.baseURL, apiKey: 'unused', maxRetries: 0, timeout: 30000 });
  });

  after(async () => {
    if (gw) await gw.stop();
  });

  const logs = () => gw;

  test(
    'non-stream echo: exactly the last user message, chat.completion shape, tiktoken usage',
    withLogs(logs, async () => {
      const messages = [
        { role: 'system', content: 'be brief' },
        { role: 'user', content: 'first question' },
        { role: 'assistant', content: 'first answer' },
        { role: 'user', content: 'Echo this back, please: ünïcödé ✓' },
      ];
      const c = await client.chat.completions.create({ model: 'echo', messages });
      assert.equal(c.object, 'chat.completion');
      assert.equal(c.model, 'echo-model-1', 'model is the modelName');
      assert.equal(c.choices.length, 1);
      assert.equal(c.choices[0].index, 0);
      assert.equal(c.choices[0].message.role, 'assistant');
      assert.equal(c.choices[0].message.content, 'Echo this back, please: ünïcödé ✓');
      assert.equal(c.choices[0].finish_reason, 'stop');
      const prompt = chatPromptTokens(messages);
      const completion = tok('Echo this back, please: ünïcödé ✓');
      assert.deepEqual(
        { p: c.usage.prompt_tokens, c: c.usage.completion_tokens, t: c.usage.total_tokens },
        { p: prompt, c: completion, t: prompt + completion }
      );
      assert.equal(typeof c.created, 'number');
    })
  );

  test(
    'the completion id is chatcmpl-<request id>',
    withLogs(logs, async () => {
      const res = await postJSON(
        `${gw.baseURL}/chat/completions`,
        { model: 'echo', messages: [{ role: 'user', content: 'id?' }] },
        { headers: { 'x-request-id': 'mock-req-0001' } }
      );
      assert.equal(res.status, 200, res.text);
      assert.equal(res.headers['x-request-id'], 'mock-req-0001');
      assert.equal(res.json.id, 'chatcmpl-mock-req-0001');
    })
  );

  test(
    'echo of content given as an array of text parts',
    withLogs(logs, async () => {
      const c = await client.chat.completions.create({
        model: 'echo',
        messages: [{ role: 'user', content: [{ type: 'text', text: 'part one' }] }],
      });
      assert.equal(c.choices[0].message.content, 'part one');
    })
  );

  test(
    'non-stream canned text through an alias',
    withLogs(logs, async () => {
      const c = await client.chat.completions.create({ model: 'canned-alias', messages: [{ role: 'user', content: 'anything' }] });
      assert.equal(c.choices[0].message.content, CANNED);
      assert.equal(c.model, 'canned', 'modelName defaults to the target name');
      assert.equal(c.usage.completion_tokens, tok(CANNED));
    })
  );

  test(
    'stream canned: config.mock.chunks content deltas, role first, stop, usage chunk, [DONE]',
    withLogs(logs, async () => {
      const stream = await client.chat.completions.create({
        model: 'canned',
        stream: true,
        stream_options: { include_usage: true },
        messages: [{ role: 'user', content: 'stream it' }],
      });
      const { text, chunks } = await collectStream(stream);
      assert.equal(text, CANNED);
      const content = chunks.filter((c) => c.choices.length && typeof c.choices[0].delta.content === 'string' && c.choices[0].delta.content !== '');
      assert.equal(content.length, 5, 'config.mock.chunks = 5 content deltas');
      assert.equal(chunks[0].choices[0].delta.role, 'assistant', 'the first chunk carries the role');
      for (const c of chunks) assert.equal(c.object, 'chat.completion.chunk');
      const stopIdx = chunks.findIndex((c) => c.choices.length && c.choices[0].finish_reason === 'stop');
      assert.ok(stopIdx > chunks.indexOf(content[content.length - 1]), 'finish_reason stop after the content');
      const last = chunks[chunks.length - 1];
      assert.deepEqual(last.choices, []);
      assert.equal(last.usage.completion_tokens, tok(CANNED));
      const prompt = chatPromptTokens([{ role: 'user', content: 'stream it' }]);
      assert.equal(last.usage.prompt_tokens, prompt);
      assert.equal(last.usage.total_tokens, tok(CANNED) + prompt);
      const ids = new Set(chunks.map((c) => c.id));
      assert.equal(ids.size, 1, 'every chunk carries the same id');
    })
  );

  test(
    'stream echo: default 4 chunks, no usage chunk without include_usage, ends with [DONE]',
    withLogs(logs, async () => {
      const input = 'a sentence long enough to be cut into four pieces';
      const res = await postJSON(`${gw.baseURL}/chat/completions`, {
        model: 'echo',
        stream: true,
        messages: [{ role: 'user', content: input }],
      });
      assert.equal(res.status, 200, res.text);
      assert.match(res.headers['content-type'], /^text\/event-stream/);
      const data = sseData(res.text);
      assert.equal(data[data.length - 1], '[DONE]');
      const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
      const content = chunks.filter((c) => c.choices.length && c.choices[0].delta.content);
      assert.equal(content.length, 4);
      assert.equal(content.map((c) => c.choices[0].delta.content).join(''), input);
      assert.ok(chunks.every((c) => !c.usage), 'no usage without include_usage');
      assert.equal(chunks[chunks.length - 1].choices[0].finish_reason, 'stop');
      assert.equal(chunks[0].model, 'echo-model-1');
    })
  );
});
