// probe-messages.test.mjs — request messages on a context route are recorded and replayed with
// every later turn, so the elements inside them are checked too, before any upstream call: each
// tool call an object with a string id, type and function.name (the rule answers are held to),
// each content part an object with a string type. A bad one is a 400 naming it
// (messages[i].tool_calls[j], messages[i].content[j]); nothing is sent and nothing recorded.
// The context API's appends follow the same rule.
// Found by the issue-6 verification (variants of defect 16 that were once stored).
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { startFakeOpenAI } from '../fakes/openai.mjs';
import { startGateway, withLogs } from '../lib/gateway.mjs';
import { assertOpenAIError, postJSON, rawRequest } from '../lib/http.mjs';

let seq = 0;
const newConv = (tag) => `${tag}-${process.pid}-${++seq}`;
const call = (extra = {}) => ({ id: 'call_1', type: 'function', function: { name: 'lookup', arguments: '{}' }, ...extra });

describe('message elements on a context route', () => {
  let fake;
  let gw;

  before(async () => {
    fake = await startFakeOpenAI();
    gw = await startGateway({
      workers: 1,
      manifests: `
apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: ctx}
spec:
  storage: {type: Memory}
---
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-probe-messages}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - {name: up, type: OpenAI, config: {endpoint: "${fake.baseURL}", modelName: up-model}}
  routes:
  - {name: ctx, backends: [{target: up}], contextRef: {name: ctx}}
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

  const cases = [
    ['a tool call that is a number', { role: 'assistant', content: null, tool_calls: [5] }, 'messages[1].tool_calls[0]'],
    ['a tool call whose id is a number', { role: 'assistant', content: null, tool_calls: [call(), call({ id: 5 })] }, 'messages[1].tool_calls[1]'],
    ['a tool call without type', { role: 'assistant', content: null, tool_calls: [{ id: 'c', function: { name: 'f' } }] }, 'messages[1].tool_calls[0]'],
    ['a tool call whose function is a string', { role: 'assistant', content: null, tool_calls: [call({ function: 'f' })] }, 'messages[1].tool_calls[0]'],
    ['a tool call without function.name', { role: 'assistant', content: null, tool_calls: [call({ function: { arguments: '{}' } })] }, 'messages[1].tool_calls[0]'],
    ['a content part that is a number', { role: 'user', content: [5] }, 'messages[1].content[0]'],
    ['a content part without type', { role: 'user', content: [{ type: 'text', text: 'a' }, { text: 'b' }] }, 'messages[1].content[1]'],
  ];
  for (const [what, bad, param] of cases) {
    test(
      `${what} → 400 naming ${param}, nothing sent or recorded (streamed or not)`,
      withLogs(logs, async () => {
        for (const stream of [false, true]) {
          const conv = newConv('elem');
          const res = await postJSON(
            `${gw.baseURL}/chat/completions`,
            { model: 'up', stream, messages: [{ role: 'user', content: 'first' }, bad] },
            { headers: { 'x-conversation-id': conv } }
          );
          const e = assertOpenAIError(assert, res, 400, 'invalid_type');
          assert.equal(e.type, 'invalid_request_error');
          assert.equal(e.param, param, res.text);
          assert.equal(res.headers['x-conversation-id'], conv);
          const got = await rawRequest(`${gw.url}/v1/contexts/${conv}`);
          assert.equal(got.status, 404, 'nothing recorded');
        }
        assert.equal(fake.chatRequests().length, 0, 'no upstream call');
      })
    );
  }

  test(
    'POST /v1/contexts/{id}/messages holds appends to the same rule: 400, nothing recorded',
    withLogs(logs, async () => {
      for (const [, bad] of cases) {
        const conv = newConv('api');
        const res = await postJSON(`${gw.url}/v1/contexts/${conv}/messages`, { messages: [{ role: 'user', content: 'first' }, bad] });
        const e = assertOpenAIError(assert, res, 400, 'invalid_value');
        assert.equal(e.param, 'messages');
        assert.match(e.message, /messages\[1\]\.(tool_calls|content)\[\d\]/, e.message);
        assert.equal((await rawRequest(`${gw.url}/v1/contexts/${conv}`)).status, 404, 'nothing recorded');
      }
    })
  );

  test(
    'well-formed tool calls, tool results and content parts pass and are recorded',
    withLogs(logs, async () => {
      const conv = newConv('good');
      const messages = [
        { role: 'user', content: [{ type: 'text', text: 'look it up' }] },
        { role: 'assistant', content: null, tool_calls: [call()] },
        { role: 'tool', tool_call_id: 'call_1', content: 'found' },
      ];
      const res = await postJSON(`${gw.baseURL}/chat/completions`, { model: 'up', messages }, { headers: { 'x-conversation-id': conv } });
      assert.equal(res.status, 200, res.text);
      const got = await rawRequest(`${gw.url}/v1/contexts/${conv}`);
      assert.equal(got.status, 200, got.text);
      assert.deepEqual(got.json.messages[1].tool_calls, [call()]);
      assert.deepEqual(got.json.messages.map((m) => m.role), ['user', 'assistant', 'tool', 'assistant']);
    })
  );
});
