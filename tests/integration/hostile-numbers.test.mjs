// hostile-numbers.test.mjs — numbers reach the provider exactly as the client wrote them, on plain
// routes (the client's bytes) and on context routes (a rebuilt body): integers beyond 64 bits,
// decimals beyond a double's digits, exponents, 1e999. The one limit: a number beyond a double's
// range inside a message a conversation would record is refused (the store keeps doubles).
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { startFakeOpenAI } from '../fakes/openai.mjs';
import { startGateway, withLogs } from '../lib/gateway.mjs';
import { assertOpenAIError, postJSON, rawRequest } from '../lib/http.mjs';

// name → JSON text, each placed as a top-level parameter and inside a nested object
const NUMBERS = {
  seed: '123456789012345678901234567890',
  big_negative: '-98765432109876543210',
  temperature: '0.7',
  top_p: '1.50',
  long_decimal: '0.30000000000000004441',
  exponent: '1E5',
  huge: '1e999',
  tiny: '1e-400',
  negative_zero: '-0',
  int64_max: '9223372036854775807',
};

const bodyText = (model, numbers = NUMBERS) => {
  const params = Object.entries(numbers)
    .map(([k, v]) => `"${k}":${v}`)
    .join(',');
  return `{"model":"${model}","messages":[{"role":"user","content":"numbers"}],${params},"metadata_nested":{"deep":[${Object.values(numbers).join(',')}]}}`;
};
const { huge, ...IN_RANGE } = NUMBERS;

describe('numbers keep their text', () => {
  let fake;
  let gw;

  before(async () => {
    fake = await startFakeOpenAI();
    gw = await startGateway({
      manifests: `
apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: nums}
spec:
  storage: {type: Memory}
  persona: "You count."
---
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-numbers}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - name: up
    type: OpenAI
    config: {endpoint: "${fake.baseURL}", modelName: up-model}
  routes:
  - {name: plain, pathPrefix: /v1, backends: [{target: up}]}
  - {name: ctx, pathPrefix: /ctx/v1, backends: [{target: up}], contextRef: {name: nums}}
  authentication: {type: None}
`,
    });
  });

  after(async () => {
    if (gw) await gw.stop();
    if (fake) await fake.close();
  });

  beforeEach(() => fake.reset());
  const logs = () => gw;

  const assertExact = (raw, numbers = NUMBERS) => {
    for (const [k, v] of Object.entries(numbers)) assert.ok(raw.includes(`"${k}":${v}`), `"${k}":${v} in ${raw}`);
    assert.ok(raw.includes(`"deep":[${Object.values(numbers).join(',')}]`), `nested numbers in ${raw}`);
  };

  test(
    'plain route: every number forwarded byte for byte',
    withLogs(logs, async () => {
      const res = await postJSON(`${gw.baseURL}/chat/completions`, bodyText('up'));
      assert.equal(res.status, 200, res.text);
      assertExact(fake.chatRequests()[0].raw);
    })
  );

  test(
    'context route (body rebuilt with the history): the same numbers, the same bytes',
    withLogs(logs, async () => {
      const headers = { 'x-conversation-id': 'numbers-1' };
      // first without 1e999 (it was once refused here while forwarded on plain routes)
      const numbersByTurn = [IN_RANGE, NUMBERS, NUMBERS];
      for (let turn = 0; turn < numbersByTurn.length; turn++) {
        const res = await postJSON(`${gw.url}/ctx/v1/chat/completions`, bodyText('up', numbersByTurn[turn]), { headers });
        assert.equal(res.status, 200, res.text);
        assert.equal(res.headers['x-context-turns'], String(turn * 2));
      }
      const sent = fake.chatRequests();
      assert.equal(sent.length, numbersByTurn.length);
      sent.forEach((r, turn) => {
        assert.equal(r.body.messages[0].content, 'You count.', 'the body was rebuilt (persona injected)');
        assertExact(r.raw, numbersByTurn[turn]);
      });
    })
  );

  test(
    'a number beyond a double inside a message: forwarded on a plain route, refused where it would be recorded',
    withLogs(logs, async () => {
      const body = '{"model":"up","messages":[{"role":"user","content":"x","weight":1e999}]}';
      const plain = await postJSON(`${gw.baseURL}/chat/completions`, body);
      assert.equal(plain.status, 200, plain.text);
      assert.ok(fake.chatRequests()[0].raw.includes('"weight":1e999'));
      const ctx = await postJSON(`${gw.url}/ctx/v1/chat/completions`, body, { headers: { 'x-conversation-id': 'numbers-2' } });
      const e = assertOpenAIError(assert, ctx, 400, 'invalid_value');
      assert.equal(e.param, 'messages');
      assert.match(e.message, /messages\[0\]/);
      assert.equal(fake.chatRequests().length, 1, 'the refused request did not reach the provider');
      assert.equal((await rawRequest(`${gw.url}/v1/contexts/numbers-2`)).status, 404, 'nothing recorded');
      // within a double's range a message number is recorded (as the nearest double)
      const ok = await postJSON(`${gw.url}/ctx/v1/chat/completions`, body.replace('1e999', '123456789012345678901234567890'), {
        headers: { 'x-conversation-id': 'numbers-3' },
      });
      assert.equal(ok.status, 200, ok.text);
      assert.ok(fake.chatRequests()[1].raw.includes('"weight":123456789012345678901234567890'), 'sent upstream exactly');
      const rec = await rawRequest(`${gw.url}/v1/contexts/numbers-3`);
      assert.equal(rec.status, 200, rec.text);
      assert.equal(rec.json.messages[0].weight, 1.2345678901234568e29);
    })
  );
  test(
    'an answer holding a number beyond a double on a context route: 502 invalid_upstream_response, nothing recorded',
    withLogs(logs, async () => {
      const answer = JSON.stringify({
        id: 'chatcmpl-huge',
        object: 'chat.completion',
        created: 0,
        model: 'up-model',
        choices: [
          {
            index: 0,
            message: {
              role: 'assistant',
              content: null,
              tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'f', arguments: '{}' }, weight: 7 }],
            },
            finish_reason: 'tool_calls',
          },
        ],
      }).replace('"weight":7', '"weight":1e999');
      fake.next({ raw: { contentType: 'application/json', body: answer } });
      const res = await postJSON(`${gw.url}/ctx/v1/chat/completions`, bodyText('up', { seed: '1' }), {
        headers: { 'x-conversation-id': 'numbers-answer' },
      });
      const e = assertOpenAIError(assert, res, 502, 'invalid_upstream_response');
      assert.equal(e.type, 'server_error');
      assert.match(e.message, /beyond the range of a double/);
      assert.equal((await rawRequest(`${gw.url}/v1/contexts/numbers-answer`)).status, 404, 'nothing recorded');
    })
  );
});
