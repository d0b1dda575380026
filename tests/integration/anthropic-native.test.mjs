// anthropic-native.test.mjs — an Anthropic caller in front of an Anthropic target is the same
// family: the request goes upstream as the caller's own bytes (model replaced, the target's
// parameters added where the request has none), the answer and the stream's events come back as
// the provider wrote them. So what the translation through the canonical form cannot carry —
// top_k, cache_control, thinking, stop_sequence in the answer — reaches both ends. Usage is
// still read (access log), a stream cut by the upstream still ends with an Anthropic error event,
// failover to another family's target still translates, and a route with a context store (whose
// strategy rewrites the request) still goes through the canonical form. The caller's
// anthropic-beta header goes with the same-family request. What only Anthropic can take (a
// document block, container: refused for other targets) goes to an Anthropic target as it is.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import Anthropic from '@anthropic-ai/sdk';

import { startFakeAnthropic } from '../fakes/anthropic.mjs';
import { startFakeOpenAI } from '../fakes/openai.mjs';
import { startGateway, withLogs } from '../lib/gateway.mjs';
import { postJSON, waitFor } from '../lib/http.mjs';

/** The SSE events of a stream body: [{event, data}] (data parsed). */
/** The access-log line of one request (written just after its answer). */
const logLine = (gw, id) => waitFor(() => gw.accessLog().find((l) => l.request_id === id), { what: `the access-log line of ${id}` });

function events(text) {
  return text
    .split(/\r?\n\r?\n/)
    .filter((b) => b.trim())
    .map((b) => ({ event: (b.match(/^event: (.*)$/m) || [])[1], data: JSON.parse(b.match(/^data: (.*)$/m)[1]) }));
}

describe('Anthropic caller, Anthropic target: the same family, nothing translated', () => {
  let ant;
  let oa;
  let gw;
  let sdk;
  const logs = () => gw;

  before(async () => {
    ant = await startFakeAnthropic({ apiKey: 'sk-ant-up', auth: 'x-api-key' });
    oa = await startFakeOpenAI();
    gw = await startGateway({
      manifests: `
apiVersion: v1
kind: Secret
metadata: {name: keys}
stringData: {anthropic: sk-ant-up}
---
apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: mem}
spec:
  storage: {type: Memory}
---
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-native}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - name: claude
    type: Anthropic
    config:
      endpoint: "${ant.baseURL}"
      modelName: claude-sonnet-4-20250514
      apiKeyRef: {name: keys, key: anthropic}
      parameters: {temperature: 0.25, top_p: 0.9}
    healthCheck: {unhealthyAfter: 100000}
  - name: claude-fo
    type: Anthropic
    config: {endpoint: "${ant.baseURL}", modelName: claude-haiku-4-5, apiKeyRef: {name: keys, key: anthropic}}
    healthCheck: {unhealthyAfter: 100000}
  - name: gpt
    type: OpenAI
    config: {endpoint: "${oa.baseURL}", modelName: gpt-4o-mini}
    healthCheck: {unhealthyAfter: 100000}
  routes:
  - name: main
    backends: [{target: claude}]
  - name: fo
    pathPrefix: /fo/v1
    backends: [{target: claude-fo}]
    failover: {targets: [gpt], backoffMs: 10}
  - name: ctx
    pathPrefix: /ctx/v1
    backends: [{target: claude}]
    contextRef: {name: mem}
  - name: oa
    pathPrefix: /oa/v1
    backends: [{target: gpt}]
  authentication: {type: None}
`,
    });
    sdk = new Anthropic({ baseURL: gw.url, apiKey: 'unused', maxRetries: 0, timeout: 20000 });
  });

  after(async () => {
    await gw?.stop();
    await ant?.close();
    await oa?.close();
  });

  beforeEach(() => {
    ant.reset();
    oa.reset();
  });

  // fields the canonical (OpenAI) form has no place for
  const rich = {
    model: 'claude',
    max_tokens: 2048,
    top_k: 7,
    top_p: 0.5,
    metadata: { user_id: 'u-42' },
    thinking: { type: 'enabled', budget_tokens: 1024 },
    stop_sequences: ['France'],
    system: [{ type: 'text', text: 'Be brief.', cache_control: { type: 'ephemeral' } }],
    messages: [{ role: 'user', content: [{ type: 'text', text: 'the capital of France?', cache_control: { type: 'ephemeral' } }] }],
  };

  test(
    "whole: the caller's bytes upstream (model replaced, parameters the request lacks added), the provider's answer back as it is",
    withLogs(logs, async () => {
      const beta = { headers: { 'anthropic-beta': 'token-efficient-tools-2025-02-19' } };
      const { data: m, response } = await sdk.messages.create(rich, beta).withResponse();
      const up = ant.messageRequests();
      assert.equal(up.length, 1);
      assert.equal(up[0].headers['x-api-key'], 'sk-ant-up');
      assert.equal(up[0].headers['anthropic-version'], '2023-06-01');
      assert.equal(up[0].headers['anthropic-beta'], 'token-efficient-tools-2025-02-19', "the caller's beta opt-in is passed on");
      // top_p is the request's (it wins over the target's 0.9); temperature is the target's
      assert.deepEqual(up[0].body, { ...rich, model: 'claude-sonnet-4-20250514', temperature: 0.25 });
      assert.ok(up[0].raw.startsWith('{"model":"claude-sonnet-4-20250514","max_tokens":2048,"top_k":7,'), up[0].raw);
      // the answer as the provider wrote it: the thinking block with its signature, the stop
      // sequence that ended it, the cache counts, the provider's own model name
      assert.deepEqual(m, up[0].responseBody);
      assert.equal(m.model, 'claude-sonnet-4-20250514');
      assert.equal(m.content[0].type, 'thinking');
      assert.equal(m.stop_reason, 'stop_sequence');
      assert.equal(m.stop_sequence, 'France');
      const line = await logLine(gw, response.headers.get('x-request-id'));
      assert.equal(line.status, 200);
      assert.equal(line.target, 'claude');
      assert.equal(line.usage_source, 'upstream');
      assert.equal(line.prompt_tokens, m.usage.input_tokens + m.usage.cache_read_input_tokens + m.usage.cache_creation_input_tokens);
      assert.equal(line.completion_tokens, m.usage.output_tokens);
    })
  );

  test(
    'stream: every event the provider sent, in order and unchanged (ping included), and the usage read from them',
    withLogs(logs, async () => {
      const res = await postJSON(`${gw.url}/v1/messages`, { ...rich, stream: true });
      assert.equal(res.status, 200, res.text);
      assert.match(res.headers['content-type'], /^text\/event-stream/);
      const up = ant.messageRequests();
      assert.equal(up.length, 1);
      assert.equal(up[0].body.stream, true);
      const want = up[0].responseEvents.map(([event, data]) => ({ event, data }));
      assert.deepEqual(events(res.text), want);
      assert.ok(want.some((e) => e.event === 'ping'));
      assert.ok(want.some((e) => e.data.delta?.type === 'thinking_delta'));
      const delta = want.find((e) => e.event === 'message_delta');
      assert.equal(delta.data.delta.stop_sequence, 'France');
      const line = await logLine(gw, res.headers['x-request-id']);
      assert.equal(line.stream, true);
      assert.equal(line.usage_source, 'upstream');
      assert.equal(line.completion_tokens, delta.data.usage.output_tokens);
      assert.ok(line.prompt_tokens > 0);

      // the SDK's stream helper reads the same events into the same message
      ant.reset();
      const s = sdk.messages.stream(rich);
      let text = '';
      s.on('text', (t) => (text += t));
      const fm = await s.finalMessage();
      assert.equal(fm.stop_reason, 'stop_sequence');
      assert.equal(fm.content.find((b) => b.type === 'text').text, text);
    })
  );

  test(
    "a stream the upstream cuts ends with the gateway's Anthropic error event after the events relayed; the provider's own error event is relayed once",
    withLogs(logs, async () => {
      ant.next({ cutAfterEvents: 3 });
      const cut = await postJSON(`${gw.url}/v1/messages`, { ...rich, stream: true });
      assert.equal(cut.status, 200);
      const got = events(cut.text);
      const sent = ant.messageRequests()[0].responseEvents.slice(0, 3).map(([event, data]) => ({ event, data }));
      assert.deepEqual(got.slice(0, 3), sent);
      assert.equal(got.length, 4, cut.text);
      assert.equal(got[3].event, 'error');
      assert.equal(got[3].data.type, 'error');
      assert.equal(got[3].data.error.type, 'api_error');
      assert.match(got[3].data.error.message, /failed mid-stream/);

      ant.reset();
      ant.next({ errorEventAfter: 2 });
      const over = await postJSON(`${gw.url}/v1/messages`, { ...rich, stream: true });
      const ev = events(over.text);
      const errors = ev.filter((e) => e.event === 'error');
      assert.equal(errors.length, 1, over.text);
      assert.deepEqual(errors[0].data, { type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } });
      assert.deepEqual(ev.slice(0, 2), ant.messageRequests()[0].responseEvents.slice(0, 2).map(([event, data]) => ({ event, data })));
    })
  );

  test(
    "failover to another family's target translates; back on an Anthropic target it is native again",
    withLogs(logs, async () => {
      ant.next({ error: 'overloaded' });
      const fo = new Anthropic({ baseURL: `${gw.url}/fo`, apiKey: 'unused', maxRetries: 0, timeout: 20000 });
      const m = await fo.messages.create({ model: 'claude-fo', max_tokens: 64, messages: [{ role: 'user', content: 'hello' }] });
      assert.equal(m.type, 'message');
      assert.equal(m.model, 'claude-fo', 'translated from the OpenAI target: the name the client sent');
      assert.equal(m.content[0].text, 'reply to: hello');
      assert.equal(oa.chatRequests().length, 1);
      const m2 = await fo.messages.create({ model: 'claude-fo', max_tokens: 64, messages: [{ role: 'user', content: 'again' }] });
      assert.equal(m2.model, 'claude-haiku-4-5', 'native: the provider\'s own');
      assert.deepEqual(ant.messageRequests().at(-1).body, { model: 'claude-haiku-4-5', max_tokens: 64, messages: [{ role: 'user', content: 'again' }] });
    })
  );

  test(
    'a route with a context store rewrites the request (history): translated, so the conversation is recorded',
    withLogs(logs, async () => {
      const h = { 'anthropic-version': '2023-06-01', 'x-api-key': 'unused', 'x-conversation-id': 'native-ctx-1' };
      const body = { model: 'claude', max_tokens: 64, messages: [{ role: 'user', content: 'first turn' }] };
      const r1 = await postJSON(`${gw.url}/ctx/v1/messages`, body, { headers: h });
      assert.equal(r1.status, 200, r1.text);
      assert.equal(r1.json.model, 'claude', 'translated: the name the client sent');
      const r2 = await postJSON(`${gw.url}/ctx/v1/messages`, { ...body, messages: [{ role: 'user', content: 'second turn' }] }, { headers: h });
      assert.equal(r2.status, 200, r2.text);
      const sent = ant.messageRequests().at(-1).body;
      assert.equal(sent.messages.length, 3, 'the history went upstream with the new turn');
      assert.equal(sent.temperature, 0.25);
    })
  );

  test(
    'what the canonical form cannot carry (a document block, container) goes to an Anthropic target as it is, and is refused for any other',
    withLogs(logs, async () => {
      const PDF = Buffer.from('%PDF-1.4 tiny').toString('base64');
      const body = {
        model: 'claude',
        max_tokens: 64,
        container: 'container_1',
        messages: [
          {
            role: 'user',
            content: [
              { type: 'text', text: 'summarise' },
              { type: 'document', source: { type: 'base64', media_type: 'application/pdf', data: PDF }, citations: { enabled: true } },
            ],
          },
        ],
      };
      const h = { 'anthropic-version': '2023-06-01', 'x-api-key': 'unused' };
      const ok = await postJSON(`${gw.url}/v1/messages`, body, { headers: h });
      assert.equal(ok.status, 200, ok.text);
      assert.deepEqual(ant.messageRequests()[0].body, { ...body, model: 'claude-sonnet-4-20250514', temperature: 0.25, top_p: 0.9 });
      assert.deepEqual(ok.json, ant.messageRequests()[0].responseBody);
      const streamed = await postJSON(`${gw.url}/v1/messages`, { ...body, stream: true }, { headers: h });
      assert.equal(streamed.status, 200);
      assert.equal(events(streamed.text).at(-1).event, 'message_stop');

      // the provider counts it too
      const { max_tokens: _, container: __, ...countBody } = body;
      const counted = await postJSON(`${gw.url}/v1/messages/count_tokens`, countBody, { headers: h });
      assert.equal(counted.status, 200, counted.text);
      assert.ok(counted.json.input_tokens > 0);

      // another family's target, or a conversation (its history goes in through the canonical
      // form): the refusal naming the field, in Anthropic's shape
      for (const [url, extra] of [
        [`${gw.url}/oa/v1/messages`, {}],
        [`${gw.url}/ctx/v1/messages`, { 'x-conversation-id': 'native-doc-1' }],
      ]) {
        const before = ant.messageRequests().length + oa.chatRequests().length;
        const r = await postJSON(url, { ...body, model: url.includes('/oa/') ? 'gpt' : 'claude', container: undefined }, { headers: { ...h, ...extra } });
        assert.equal(r.status, 400, r.text);
        assert.equal(r.json.type, 'error');
        assert.equal(r.json.error.type, 'invalid_request_error');
        assert.match(r.json.error.message, /^messages\.0\.content\.1\.type: document blocks .* not supported by this gateway/);
        assert.match(r.json.error.message, /not served by an Anthropic target/);
        assert.equal(ant.messageRequests().length + oa.chatRequests().length, before, 'nothing sent upstream');
      }
      // a malformed request is the gateway's to refuse, whatever the target: nothing goes upstream
      const before = ant.messageRequests().length;
      const bad = await postJSON(`${gw.url}/v1/messages`, { model: 'claude', max_tokens: 'many', messages: [{ role: 'user', content: 'x' }] }, { headers: h });
      assert.equal(bad.status, 400, bad.text);
      assert.match(bad.json.error.message, /^max_tokens: /);
      assert.equal(ant.messageRequests().length, before);
      // past what it cannot carry the gateway does not look further: the provider checks the
      // rest, and its refusal comes back in the same shape
      const late = await postJSON(`${gw.url}/v1/messages`, { ...body, max_tokens: 'many' }, { headers: h });
      assert.equal(late.status, 400, late.text);
      assert.equal(late.json.type, 'error');
      assert.match(late.json.error.message, /max_tokens/);
      // and nothing is made up for it: without max_tokens the provider says it is required
      const { max_tokens: _m, ...noMax } = body;
      const missing = await postJSON(`${gw.url}/v1/messages`, noMax, { headers: h });
      assert.equal(missing.status, 400, missing.text);
      assert.match(missing.json.error.message, /max_tokens: Field required/);
      assert.equal(ant.messageRequests().at(-1).body.max_tokens, undefined);
    })
  );
});
