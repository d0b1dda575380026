// cross-family.test.mjs — one conversation (a route with contextRef to a Memory
// ModelContextProtocol, X-Conversation-Id) carried across caller families: a turn through
// @anthropic-ai/sdk (/messages) and the next through the openai SDK (/chat/completions), and the
// other way round, streamed and whole; and an Anthropic target behind the context with openai
// clients. What the upstream fake receives on turn 2 must hold turn 1's user message and answer.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';

import { startFakeOpenAI } from '../fakes/openai.mjs';
import { startFakeAnthropic } from '../fakes/anthropic.mjs';
import { startGateway, withLogs } from '../lib/gateway.mjs';

const PERSONA = 'You are the Acme travel assistant.';
let seq = 0;
const newConv = (tag) => `xf-${tag}-${process.pid}-${++seq}`;

describe('one conversation across the openai and anthropic SDKs (Memory context)', () => {
  let oaFake;
  let antFake;
  let gw;
  let openai;
  let anthropic;

  before(async () => {
    oaFake = await startFakeOpenAI();
    antFake = await startFakeAnthropic();
    gw = await startGateway({
      manifests: `
apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: travel-context}
spec:
  storage: {type: Memory}
  contextStrategy: {type: LastN, lastN: 20}
  persona: "${PERSONA}"
---
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-cross-family}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - name: m-openai
    type: OpenAI
    config: {endpoint: "${oaFake.baseURL}", modelName: gpt-4o-mini}
  - name: m-anthropic
    type: Anthropic
    config: {endpoint: "${antFake.baseURL}", modelName: claude-sonnet-4-20250514}
  routes:
  - name: travel
    backends: [{target: m-openai}, {target: m-anthropic}]
    contextRef: {name: travel-context}
  authentication: {type: None}
`,
    });
    openai = new OpenAI({ baseURL: gw.baseURL, apiKey: 'unused', maxRetries: 0, timeout: 20000 });
    anthropic = new Anthropic({ baseURL: gw.url, apiKey: 'unused', maxRetries: 0, timeout: 20000 });
  });

  after(async () => {
    if (gw) await gw.stop();
    if (oaFake) await oaFake.close();
    if (antFake) await antFake.close();
  });

  beforeEach(() => {
    oaFake.reset();
    antFake.reset();
  });

  const logs = () => gw;
  const hdr = (conv) => ({ headers: { 'X-Conversation-Id': conv } });
  const user = (content) => [{ role: 'user', content }];

  /** One turn through the openai SDK: {text, conv, turns}. */
  async function askOpenAI(model, conv, content, stream = false) {
    const req = { model, messages: [{ role: 'user', content }] };
    if (!stream) {
      const { data, response } = await openai.chat.completions.create(req, hdr(conv)).withResponse();
      return { text: data.choices[0].message.content, conv: response.headers.get('x-conversation-id'), turns: response.headers.get('x-context-turns') };
    }
    const { data, response } = await openai.chat.completions.create({ ...req, stream: true }, hdr(conv)).withResponse();
    let text = '';
    for await (const ch of data) for (const c of ch.choices) text += c.delta.content || '';
    return { text, conv: response.headers.get('x-conversation-id'), turns: response.headers.get('x-context-turns') };
  }

  /** One turn through @anthropic-ai/sdk: {text, conv, turns}. */
  async function askAnthropic(model, conv, content, stream = false) {
    const req = { model, max_tokens: 100, messages: [{ role: 'user', content }] };
    if (!stream) {
      const { data, response } = await anthropic.messages.create(req, hdr(conv)).withResponse();
      assert.equal(data.stop_reason, 'end_turn');
      return { text: data.content.map((b) => b.text).join(''), conv: response.headers.get('x-conversation-id'), turns: response.headers.get('x-context-turns') };
    }
    const s = anthropic.messages.stream(req, hdr(conv));
    const m = await s.finalMessage();
    const response = (await s.withResponse()).response;
    return { text: m.content.map((b) => b.text).join(''), conv: response.headers.get('x-conversation-id'), turns: response.headers.get('x-context-turns') };
  }

  const lastOpenAIBody = () => oaFake.chatRequests().at(-1).body;
  /** The Claude target's last request, its messages' text blocks flattened to strings (the
   * adapter sends content as blocks; a non-text block here would be a mistake). */
  function lastAnthropicBody() {
    const b = antFake.messageRequests().at(-1).body;
    const flat = (c) => {
      if (typeof c === 'string') return c;
      assert.ok(c.every((x) => x.type === 'text'), `text blocks only: ${JSON.stringify(c)}`);
      return c.map((x) => x.text).join('');
    };
    return { ...b, messages: b.messages.map((m) => ({ role: m.role, content: flat(m.content) })) };
  }

  for (const stream of [false, true]) {
    const how = stream ? 'streamed' : 'whole';

    test(
      `turn 1 via /messages (anthropic SDK), turn 2 via /chat/completions (openai SDK), ${how}: turn 2 carries turn 1`,
      withLogs(logs, async () => {
        const conv = newConv('a2o');
        const t1 = await askAnthropic('m-openai', conv, 'I want to visit Lisbon.', stream);
        assert.equal(t1.text, 'reply to: I want to visit Lisbon.');
        assert.equal(t1.conv, conv, 'X-Conversation-Id echoed on /messages');
        assert.equal(t1.turns, '0');
        assert.deepEqual(lastOpenAIBody().messages, [
          { role: 'system', content: PERSONA },
          { role: 'user', content: 'I want to visit Lisbon.' },
        ]);

        const t2 = await askOpenAI('m-openai', conv, 'When is the best season?', stream);
        assert.equal(t2.text, 'reply to: When is the best season?');
        assert.equal(t2.turns, '2');
        assert.deepEqual(lastOpenAIBody().messages, [
          { role: 'system', content: PERSONA },
          { role: 'user', content: 'I want to visit Lisbon.' },
          { role: 'assistant', content: t1.text },
          { role: 'user', content: 'When is the best season?' },
        ]);
      })
    );

    test(
      `turn 1 via /chat/completions (openai SDK), turn 2 via /messages (anthropic SDK), ${how}: turn 2 carries turn 1`,
      withLogs(logs, async () => {
        const conv = newConv('o2a');
        oaFake.next({ text: 'Porto is lovely in May.' });
        const t1 = await askOpenAI('m-openai', conv, 'Tell me about Porto.', stream);
        assert.equal(t1.text, 'Porto is lovely in May.');
        assert.equal(t1.conv, conv);

        const t2 = await askAnthropic('m-openai', conv, 'And the food?', stream);
        assert.equal(t2.text, 'reply to: And the food?');
        assert.equal(t2.conv, conv);
        assert.equal(t2.turns, '2');
        assert.deepEqual(lastOpenAIBody().messages, [
          { role: 'system', content: PERSONA },
          { role: 'user', content: 'Tell me about Porto.' },
          { role: 'assistant', content: 'Porto is lovely in May.' },
          { role: 'user', content: 'And the food?' },
        ]);
      })
    );
  }

  test(
    'an Anthropic target behind the context, openai clients: the history reaches it as Messages (persona as system)',
    withLogs(logs, async () => {
      const conv = newConv('o2claude');
      const t1 = await askOpenAI('m-anthropic', conv, 'Plan a day in Madrid.');
      assert.equal(t1.text, 'reply to: Plan a day in Madrid.');
      let b = lastAnthropicBody();
      assert.equal(b.system, PERSONA);
      assert.deepEqual(b.messages, [{ role: 'user', content: 'Plan a day in Madrid.' }]);

      const t2 = await askOpenAI('m-anthropic', conv, 'Add a museum.', true);
      assert.equal(t2.text, 'reply to: Add a museum.');
      assert.equal(t2.turns, '2');
      b = lastAnthropicBody();
      assert.equal(b.system, PERSONA);
      assert.deepEqual(b.messages, [
        { role: 'user', content: 'Plan a day in Madrid.' },
        { role: 'assistant', content: t1.text },
        { role: 'user', content: 'Add a museum.' },
      ]);

      // turn 3 from the other family, still on the Claude target: both earlier turns come along
      const t3 = await askAnthropic('m-anthropic', conv, 'Thanks!');
      assert.equal(t3.text, 'reply to: Thanks!');
      assert.equal(t3.turns, '4');
      b = lastAnthropicBody();
      assert.equal(b.system, PERSONA);
      assert.deepEqual(b.messages, [
        { role: 'user', content: 'Plan a day in Madrid.' },
        { role: 'assistant', content: t1.text },
        { role: 'user', content: 'Add a museum.' },
        { role: 'assistant', content: t2.text },
        { role: 'user', content: 'Thanks!' },
      ]);
    })
  );

  test(
    'a conversation moves between target types too: turn 1 on the OpenAI target (anthropic SDK), turn 2 on the Claude target (openai SDK)',
    withLogs(logs, async () => {
      const conv = newConv('switch');
      const t1 = await askAnthropic('m-openai', conv, 'Which city has trams?');
      const t2 = await askOpenAI('m-anthropic', conv, 'How much is a ticket?');
      assert.equal(t2.text, 'reply to: How much is a ticket?');
      const b = lastAnthropicBody();
      assert.equal(b.system, PERSONA);
      assert.deepEqual(b.messages, [
        { role: 'user', content: 'Which city has trams?' },
        { role: 'assistant', content: t1.text },
        { role: 'user', content: 'How much is a ticket?' },
      ]);
    })
  );

  test(
    'a tool call across families: tool_use via /messages on the Claude target, its tool_result next turn, then the OpenAI target via the openai SDK',
    withLogs(logs, async () => {
      const conv = newConv('tools');
      const tools = [{ name: 'get_weather', description: 'The weather', input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } }];
      const t1 = await anthropic.messages.create({ model: 'm-anthropic', max_tokens: 100, tools, messages: user('please use the tool for Rome') }, hdr(conv));
      assert.equal(t1.stop_reason, 'tool_use');
      const use = t1.content.find((b) => b.type === 'tool_use');
      assert.deepEqual(use.input, { city: 'city-1' });

      // turn 2: only the tool result; the stored tool_use must precede it (the fake checks the pairing)
      const t2 = await anthropic.messages.create(
        { model: 'm-anthropic', max_tokens: 100, tools, messages: [{ role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: 'sunny, 24 C' }] }] },
        hdr(conv)
      );
      assert.equal(t2.stop_reason, 'end_turn');
      assert.equal(t2.content[0].text, 'reply to: sunny, 24 C');
      const b = antFake.messageRequests().at(-1).body;
      assert.equal(b.system, PERSONA);
      assert.equal(b.messages.length, 3);
      assert.deepEqual(b.messages[1].content.filter((x) => x.type === 'tool_use'), [{ type: 'tool_use', id: use.id, name: 'get_weather', input: { city: 'city-1' } }]);
      assert.deepEqual(b.messages[2].content, [{ type: 'tool_result', tool_use_id: use.id, content: 'sunny, 24 C' }]);

      // turn 3 through the openai SDK on the OpenAI target: the call and its result in OpenAI's form
      const t3 = await askOpenAI('m-openai', conv, 'Should I take an umbrella?');
      assert.equal(t3.text, 'reply to: Should I take an umbrella?');
      const m = lastOpenAIBody().messages;
      assert.deepEqual(m[0], { role: 'system', content: PERSONA });
      assert.deepEqual(m[1], { role: 'user', content: 'please use the tool for Rome' });
      assert.equal(m[2].role, 'assistant');
      assert.deepEqual(
        m[2].tool_calls.map((c) => ({ id: c.id, type: c.type, name: c.function.name, args: JSON.parse(c.function.arguments) })),
        [{ id: use.id, type: 'function', name: 'get_weather', args: { city: 'city-1' } }]
      );
      assert.deepEqual(m[3], { role: 'tool', tool_call_id: use.id, content: 'sunny, 24 C' });
      assert.deepEqual(m[4], { role: 'assistant', content: t2.content[0].text });
      assert.deepEqual(m[5], { role: 'user', content: 'Should I take an umbrella?' });
      assert.equal(m.length, 6);
    })
  );
});
