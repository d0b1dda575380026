// family-errors.test.mjs — errors reach each caller in its own family's shape, whatever the target:
// an Anthropic target's 529 as OpenAI's 503 server_error; an OpenAI target's 429 (Retry-After) as
// Anthropic's 429 rate_limit_error {"type":"error","error":{...}} (the SDK's RateLimitError); a bad
// /messages request and an unknown model as Anthropic errors; a stream cut after some text as a
// final `data: {"error":…}` line (OpenAI) or `event: error` (Anthropic); failover from a 529-ing
// Claude target to an OpenAI target for both SDKs; /messages/count_tokens exact for Mock and
// OpenAI targets (the gateway's tokenizer), asked of an Anthropic target's own count_tokens
// endpoint, and a clear 400 for a target whose tokenizer is unknown (OpenAICompatible).
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';

import { startFakeOpenAI } from '../fakes/openai.mjs';
import { startFakeAnthropic } from '../fakes/anthropic.mjs';
import { startGateway, withLogs } from '../lib/gateway.mjs';
import { postJSON, sseData } from '../lib/http.mjs';
import { chatPromptTokens } from '../lib/tokens.mjs';

const A_HEADERS = { 'anthropic-version': '2023-06-01', 'x-api-key': 'unused' };

/** Asserts Anthropic's error shape {"type":"error","error":{"type","message"}}; returns error. */
function assertAnthropicError(res, status, type) {
  assert.equal(res.status, status, `status (body: ${res.text})`);
  assert.ok(res.json, `JSON body: ${res.text}`);
  assert.equal(res.json.type, 'error', res.text);
  assert.equal(res.json.error.type, type, res.text);
  assert.equal(typeof res.json.error.message, 'string');
  assert.ok(res.json.error.message.length > 0);
  return res.json.error;
}

/** The SSE events of an Anthropic stream body: [{event, data}] (data parsed). */
function anthropicEvents(text) {
  return text
    .split(/\r?\n\r?\n/)
    .filter((b) => b.trim())
    .map((b) => ({ event: (b.match(/^event: (.*)$/m) || [])[1], data: JSON.parse(b.match(/^data: (.*)$/m)[1]) }));
}

describe('errors in the caller family', () => {
  let antFake;
  let oaFake;
  let gw;
  let openai;
  let anthropic;

  before(async () => {
    antFake = await startFakeAnthropic();
    oaFake = await startFakeOpenAI();
    gw = await startGateway({
      manifests: `
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-family-errors}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - name: m-anthropic
    type: Anthropic
    config: {endpoint: "${antFake.baseURL}", modelName: claude-sonnet-4-20250514}
    healthCheck: {unhealthyAfter: 100000}
  - name: m-openai
    type: OpenAI
    config: {endpoint: "${oaFake.baseURL}", modelName: gpt-4o-mini}
    healthCheck: {unhealthyAfter: 100000}
  - name: m-mock
    type: Mock
    config: {modelName: gpt-4o-mini}
  - name: m-compat
    type: OpenAICompatible
    config: {endpoint: "${oaFake.baseURL}", modelName: local-llama}
  - name: fo-claude
    type: Anthropic
    config: {endpoint: "${antFake.baseURL}", modelName: claude-sonnet-4-20250514}
    healthCheck: {unhealthyAfter: 100000}
  - name: fo-openai
    type: OpenAI
    config: {endpoint: "${oaFake.baseURL}", modelName: gpt-4o-mini}
    healthCheck: {unhealthyAfter: 100000}
  routes:
  - name: main
    backends: [{target: m-anthropic}, {target: m-openai}, {target: m-mock}, {target: m-compat}]
  - name: fo
    pathPrefix: /fo/v1
    backends: [{target: fo-claude}]
    failover: {targets: [fo-openai], backoffMs: 10}
  authentication: {type: None}
`,
    });
    openai = new OpenAI({ baseURL: gw.baseURL, apiKey: 'unused', maxRetries: 0, timeout: 20000 });
    anthropic = new Anthropic({ baseURL: gw.url, apiKey: 'unused', maxRetries: 0, timeout: 20000 });
  });

  after(async () => {
    if (gw) await gw.stop();
    if (antFake) await antFake.close();
    if (oaFake) await oaFake.close();
  });

  beforeEach(() => {
    antFake.reset();
    oaFake.reset();
  });

  const logs = () => gw;
  const user = (content) => [{ role: 'user', content }];

  test(
    'Anthropic target overloaded (529) -> the openai SDK gets 503 server_error, whole and streamed',
    withLogs(logs, async () => {
      for (const stream of [false, true]) {
        antFake.next({ error: 'overloaded' });
        await assert.rejects(
          openai.chat.completions.create({ model: 'm-anthropic', messages: user('hi'), stream }),
          (e) => {
            assert.ok(e instanceof OpenAI.InternalServerError, `${e.constructor.name}: ${e.message}`);
            assert.equal(e.status, 503);
            assert.equal(e.type, 'server_error');
            assert.equal(e.code, 'upstream_overloaded');
            return true;
          }
        );
        assert.equal(antFake.messageRequests().length, stream ? 2 : 1, 'no retry: the route has no failover');
      }
    })
  );

  test(
    'OpenAI target 429 with retry-after -> the anthropic SDK gets 429 rate_limit_error (RateLimitError), Retry-After relayed',
    withLogs(logs, async () => {
      oaFake.next({ status: 429, headers: { 'retry-after': '7' } });
      await assert.rejects(anthropic.messages.create({ model: 'm-openai', max_tokens: 50, messages: user('hi') }), (e) => {
        assert.ok(e instanceof Anthropic.RateLimitError, `${e.constructor.name}: ${e.message}`);
        assert.equal(e.status, 429);
        assert.equal(e.error.type, 'error');
        assert.equal(e.error.error.type, 'rate_limit_error');
        assert.equal(typeof e.error.error.message, 'string');
        assert.equal(e.headers.get('retry-after'), '7');
        return true;
      });
      // the raw shape, byte for byte the documented one
      oaFake.next({ status: 429, headers: { 'retry-after': '7' } });
      const res = await postJSON(`${gw.url}/v1/messages`, { model: 'm-openai', max_tokens: 50, messages: user('hi') }, { headers: A_HEADERS });
      assertAnthropicError(res, 429, 'rate_limit_error');
      assert.deepEqual(Object.keys(res.json).sort(), ['error', 'type']);
      assert.equal(res.headers['retry-after'], '7');
      assert.equal(oaFake.chatRequests().length, 2);
    })
  );

  test(
    'a /messages request without max_tokens -> 400 invalid_request_error naming max_tokens (nothing sent upstream)',
    withLogs(logs, async () => {
      const res = await postJSON(`${gw.url}/v1/messages`, { model: 'm-openai', messages: user('hi') }, { headers: A_HEADERS });
      const e = assertAnthropicError(res, 400, 'invalid_request_error');
      assert.match(e.message, /max_tokens/);
      await assert.rejects(anthropic.messages.create({ model: 'm-anthropic', messages: user('hi') }), (err) => {
        assert.ok(err instanceof Anthropic.BadRequestError, `${err.constructor.name}: ${err.message}`);
        assert.equal(err.error.error.type, 'invalid_request_error');
        assert.match(err.error.error.message, /max_tokens/);
        return true;
      });
      assert.equal(oaFake.chatRequests().length + antFake.messageRequests().length, 0);
    })
  );

  test(
    'an unknown model -> 404 not_found_error for the anthropic SDK (NotFoundError)',
    withLogs(logs, async () => {
      await assert.rejects(anthropic.messages.create({ model: 'no-such-model', max_tokens: 20, messages: user('hi') }), (e) => {
        assert.ok(e instanceof Anthropic.NotFoundError, `${e.constructor.name}: ${e.message}`);
        assert.equal(e.status, 404);
        assert.equal(e.error.type, 'error');
        assert.equal(e.error.error.type, 'not_found_error');
        assert.match(e.error.error.message, /no-such-model/);
        return true;
      });
      const res = await postJSON(`${gw.url}/v1/messages/count_tokens`, { model: 'no-such-model', messages: user('hi') }, { headers: A_HEADERS });
      assertAnthropicError(res, 404, 'not_found_error');
    })
  );

  test(
    'a stream cut after some text: the openai caller gets a final data line with an error object (raw, and the SDK throws)',
    withLogs(logs, async () => {
      // Claude target: message_start, content_block_start, ping, 2 text deltas, then the cut
      antFake.next({ text: 'one two three four five', cutAfterEvents: 5 });
      const res = await postJSON(`${gw.url}/v1/chat/completions`, { model: 'm-anthropic', stream: true, messages: user('hi') });
      assert.equal(res.status, 200);
      const data = sseData(res.text);
      assert.notEqual(data.at(-1), '[DONE]', 'a cut stream does not end as if complete');
      const last = JSON.parse(data.at(-1));
      assert.ok(last.error, `final line is an error: ${data.at(-1)}`);
      assert.equal(last.error.type, 'server_error');
      assert.equal(last.error.code, 'upstream_error');
      assert.match(last.error.message, /m-anthropic.*mid-stream/);
      const text = data
        .slice(0, -1)
        .map((d) => JSON.parse(d))
        .flatMap((c) => c.choices || [])
        .map((c) => c.delta.content || '')
        .join('');
      assert.equal(text, 'one two', 'the text before the cut reached the client');

      // the same through the SDK: text first, then the error is thrown
      antFake.next({ text: 'one two three four five', cutAfterEvents: 5 });
      const s = await openai.chat.completions.create({ model: 'm-anthropic', stream: true, messages: user('hi') });
      let got = '';
      await assert.rejects(
        (async () => {
          for await (const c of s) for (const ch of c.choices) got += ch.delta.content || '';
        })(),
        (e) => e instanceof OpenAI.APIError
      );
      assert.equal(got, 'one two');

      // an OpenAI target cut the same way
      oaFake.next({ text: 'alpha beta gamma delta', cutAfterChunks: 2 });
      const r2 = await postJSON(`${gw.url}/v1/chat/completions`, { model: 'm-openai', stream: true, messages: user('hi') });
      const d2 = sseData(r2.text);
      assert.ok(JSON.parse(d2.at(-1)).error, `final line is an error: ${d2.at(-1)}`);
    })
  );

  test(
    'a stream cut after some text: the anthropic caller gets `event: error` after the text (raw bytes; the SDK throws)',
    withLogs(logs, async () => {
      for (const target of ['m-openai', 'm-anthropic']) {
        if (target === 'm-openai') oaFake.next({ text: 'alpha beta gamma delta', cutAfterChunks: 2 });
        else antFake.next({ text: 'alpha beta gamma delta', cutAfterEvents: 5 });
        const res = await fetch(`${gw.url}/v1/messages`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...A_HEADERS },
          body: JSON.stringify({ model: target, max_tokens: 50, stream: true, messages: user('hi') }),
        });
        assert.equal(res.status, 200);
        const events = anthropicEvents(await res.text());
        const names = events.map((e) => e.event).filter((n) => n !== 'ping');
        assert.equal(names.at(-1), 'error', `${target}: the stream ends with event: error: ${names}`);
        assert.ok(!names.includes('message_stop'), 'no message_stop');
        assert.deepEqual(names.slice(0, 2), ['message_start', 'content_block_start']);
        const err = events.at(-1).data;
        assert.equal(err.type, 'error');
        assert.equal(err.error.type, 'api_error');
        assert.match(err.error.message, new RegExp(`${target}.*mid-stream`));
        const text = events
          .filter((e) => e.event === 'content_block_delta')
          .map((e) => e.data.delta.text)
          .join('');
        assert.equal(text, 'alpha beta', `${target}: the text before the cut reached the client`);
      }

      oaFake.next({ text: 'alpha beta gamma delta', cutAfterChunks: 2 });
      const s = anthropic.messages.stream({ model: 'm-openai', max_tokens: 50, messages: user('hi') });
      let got = '';
      s.on('text', (t) => (got += t));
      await assert.rejects(s.finalMessage(), (e) => {
        assert.ok(e instanceof Anthropic.APIError, `${e.constructor.name}: ${e.message}`);
        return true;
      });
      assert.equal(got, 'alpha beta');
    })
  );

  test(
    'failover from a Claude target answering 529 to an OpenAI target: both SDKs get the answer',
    withLogs(logs, async () => {
      const oa = new OpenAI({ baseURL: `${gw.url}/fo/v1`, apiKey: 'unused', maxRetries: 0, timeout: 20000 });
      const an = new Anthropic({ baseURL: `${gw.url}/fo`, apiKey: 'unused', maxRetries: 0, timeout: 20000 });

      antFake.next({ error: 'overloaded' });
      const r1 = await oa.chat.completions.create({ model: 'fo-claude', messages: user('first try') });
      assert.equal(r1.choices[0].message.content, 'reply to: first try');
      assert.equal(r1.choices[0].finish_reason, 'stop');

      antFake.next({ error: 'overloaded' });
      const r2 = await an.messages.create({ model: 'fo-claude', max_tokens: 50, messages: user('second try') });
      assert.equal(r2.content[0].text, 'reply to: second try');
      assert.equal(r2.stop_reason, 'end_turn');
      assert.ok(r2.usage.input_tokens > 0 && r2.usage.output_tokens > 0);

      antFake.next({ error: 'overloaded' });
      const m3 = await an.messages.stream({ model: 'fo-claude', max_tokens: 50, messages: user('third try') }).finalMessage();
      assert.equal(m3.content[0].text, 'reply to: third try');

      assert.deepEqual(
        antFake.messageRequests().map((r) => r.responseStatus),
        [529, 529, 529],
        'each first attempt went to the Claude target'
      );
      const oaReqs = oaFake.chatRequests();
      assert.equal(oaReqs.length, 3, 'each second attempt went to the OpenAI target');
      assert.deepEqual(oaReqs[1].body.messages, user('second try'));
      assert.equal(oaReqs[1].body.max_tokens, 50);
    })
  );

  test(
    'count_tokens: exact for a Mock and an OpenAI target (the gateway counts), an Anthropic target counts for itself, a clear 400 for an unknown tokenizer',
    withLogs(logs, async () => {
      const system = 'You count carefully.';
      const messages = [
        { role: 'user', content: 'How many tokens is this sentence?' },
        { role: 'assistant', content: 'Let me see.' },
        { role: 'user', content: [{ type: 'text', text: 'Count them all, please.' }] },
      ];
      const want = chatPromptTokens([{ role: 'system', content: system }, ...messages]);
      for (const model of ['m-mock', 'm-openai']) {
        const r = await anthropic.messages.countTokens({ model, system, messages });
        assert.deepEqual(r, { input_tokens: want }, model);
      }
      // tools count too
      const tools = [{ name: 'get_weather', description: 'The weather', input_schema: { type: 'object', properties: { city: { type: 'string' } } } }];
      const withTools = await anthropic.messages.countTokens({ model: 'm-mock', system, messages, tools });
      assert.ok(withTools.input_tokens > want, `tools add tokens: ${withTools.input_tokens} > ${want}`);

      assert.equal(oaFake.chatRequests().length + antFake.messageRequests().length, 0, 'the gateway counted: nothing sent upstream');

      // an Anthropic target counts for itself: its count_tokens endpoint, the caller's request
      // with the provider's model id, the provider's answer as it is
      const thinking = { type: 'enabled', budget_tokens: 1024 };
      const claude = await anthropic.messages.countTokens({ model: 'm-anthropic', system, messages, tools, thinking });
      const asked = antFake.requests.filter((r) => r.path === '/v1/messages/count_tokens');
      assert.equal(asked.length, 1);
      assert.deepEqual(asked[0].body, { model: 'claude-sonnet-4-20250514', system, messages, tools, thinking });
      assert.deepEqual(claude, asked[0].responseBody);
      assert.ok(claude.input_tokens > 0);
      // its errors come back in Anthropic's shape
      antFake.next({ error: 'overloaded' });
      const over = await postJSON(`${gw.url}/v1/messages/count_tokens`, { model: 'm-anthropic', messages }, { headers: A_HEADERS });
      assertAnthropicError(over, 503, 'overloaded_error');
      // an answer without a count is refused, not relayed
      antFake.next({ body: '{"tokens": 3}', headers: { 'content-type': 'application/json' } });
      const odd = await postJSON(`${gw.url}/v1/messages/count_tokens`, { model: 'm-anthropic', messages }, { headers: A_HEADERS });
      assert.match(assertAnthropicError(odd, 502, 'api_error').message, /input_tokens/);

      await assert.rejects(anthropic.messages.countTokens({ model: 'm-compat', system, messages }), (e) => {
        assert.ok(e instanceof Anthropic.BadRequestError, `${e.constructor.name}: ${e.message}`);
        assert.equal(e.error.type, 'error');
        assert.equal(e.error.error.type, 'invalid_request_error');
        assert.match(e.error.error.message, /m-compat/);
        assert.match(e.error.error.message, /OpenAI, AzureOpenAI and Mock targets \(the gateway counts\) and Anthropic targets/);
        return true;
      });
      const bad = await postJSON(`${gw.url}/v1/messages/count_tokens`, { model: 'm-mock', max_tokens: 5, messages }, { headers: A_HEADERS });
      assert.match(assertAnthropicError(bad, 400, 'invalid_request_error').message, /max_tokens/);
      assert.equal(oaFake.chatRequests().length + antFake.messageRequests().length, 0, 'counting sends no chat request');
    })
  );
});
