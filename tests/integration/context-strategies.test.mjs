// context-strategies.test.mjs — the ModelContextProtocol contextStrategy as the model sees it
// (the fake OpenAI upstream records each request): LastN keeps whole turns starting on a user
// message, TokenBudget keeps exactly the most recent turns that fit maxContextTokens (counted
// here independently with the gpt-tokenizer package, OpenAI cookbook rules), Summarize folds old
// turns into a summary written by a Mock target of the same gateway.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

import { startFakeOpenAI } from '../fakes/openai.mjs';
import { startGateway, withLogs } from '../lib/gateway.mjs';
import { chatPromptTokens } from '../lib/tokens.mjs';

const PERSONA = 'You are a concise assistant for the Acme router line.';
const SUMMARY_TEXT = 'The user asked about router lights and firmware; all were answered.';
const SUMMARY_PREFIX = 'Summary of the earlier conversation: ';

const user = (content) => ({ role: 'user', content });
const assistant = (content) => ({ role: 'assistant', content });
const system = (content) => ({ role: 'system', content });
/** A turn the fake answers with its default text. */
const turn = (q) => [user(q), assistant(`reply to: ${q}`)];

// TokenBudget: four stored turns, then a fifth request. The budget is the exact token count of
// persona + turns 3-4 + the request, so turns 3-4 fit and adding turn 2 does not.
const BUDGET_QUESTIONS = [
  'What does the blinking red light on the front panel mean?',
  'How long should I wait after unplugging it before I plug it back in?',
  'The light is now orange. Is that better or worse than red?',
  'Where can I download the newest firmware for model AX-3000?',
];
const BUDGET_LAST = 'Thanks, and how do I install that firmware?';
const budgetHistory = BUDGET_QUESTIONS.flatMap(turn);
const BUDGET_EXPECTED = [system(PERSONA), ...budgetHistory.slice(4), user(BUDGET_LAST)];
const BUDGET = chatPromptTokens(BUDGET_EXPECTED);
const BUDGET_WITH_TURN2 = chatPromptTokens([system(PERSONA), ...budgetHistory.slice(2), user(BUDGET_LAST)]);

// Summarize: the history crosses triggerTokens after the third turn, not before.
const SUM_QUESTIONS = ['Is the AX-3000 dual band?', 'Does it support WPA3 security?', 'Can I mount it on a wall?'];
const sumHistoryTokens = (n) => chatPromptTokens(SUM_QUESTIONS.slice(0, n).flatMap(turn)) - 3; // no reply priming
const SUM_TRIGGER = Math.floor((sumHistoryTokens(2) + sumHistoryTokens(3)) / 2);

describe('context strategies as the model sees them', () => {
  let fake;
  let gw;

  before(async () => {
    assert.ok(BUDGET < BUDGET_WITH_TURN2, 'the budget test needs turn 2 to make a difference');
    assert.ok(sumHistoryTokens(2) <= SUM_TRIGGER && SUM_TRIGGER < sumHistoryTokens(3), 'trigger between turns 2 and 3');
    fake = await startFakeOpenAI();
    const mcp = (name, strategy) => `
apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: ${name}}
spec:
  storage: {type: Memory}
  persona: "${PERSONA}"
  contextStrategy: ${JSON.stringify(strategy)}
`;
    gw = await startGateway({
      manifests: [
        mcp('ctx-lastn', { type: 'LastN', lastN: 2 }),
        mcp('ctx-budget', { type: 'TokenBudget', maxContextTokens: BUDGET }),
        mcp('ctx-summarize', {
          type: 'Summarize',
          lastN: 2,
          maxContextTokens: 4000,
          summarize: { target: 'summarizer', triggerTokens: SUM_TRIGGER },
        }),
        mcp('ctx-summarize-slow', {
          type: 'Summarize',
          lastN: 2,
          maxContextTokens: 4000,
          summarize: { target: 'slow-summarizer', triggerTokens: SUM_TRIGGER },
        }),
        `
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-strategies}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - name: smart
    type: OpenAI
    config: {endpoint: ${fake.baseURL}, modelName: gpt-4o-mini}
  - name: summarizer
    type: Mock
    config: {mock: {text: "${SUMMARY_TEXT}"}}
  - name: slow-summarizer
    type: Mock
    config: {mock: {text: "${SUMMARY_TEXT}", latencyMs: 300}}
  routes:
  - {name: lastn, pathPrefix: /v1/lastn, backends: [{target: smart}], contextRef: {name: ctx-lastn}}
  - {name: budget, pathPrefix: /v1/budget, backends: [{target: smart}], contextRef: {name: ctx-budget}}
  - {name: summarize, pathPrefix: /v1/summarize, backends: [{target: smart}], contextRef: {name: ctx-summarize}}
  - {name: summarize-slow, pathPrefix: /v1/summarize-slow, backends: [{target: smart}], contextRef: {name: ctx-summarize-slow}}
  authentication: {type: None}
`,
      ],
    });
  });

  after(async () => {
    if (gw) await gw.stop();
    if (fake) await fake.close();
  });

  beforeEach(() => fake.reset());

  const logs = () => gw;

  /** Polls the context API until the conversation has a summary (at most 10 s). */
  async function waitForSummary(conv) {
    for (let i = 0; i < 500; i++) {
      const res = await fetch(`${gw.url}/v1/contexts/${encodeURIComponent(conv)}?mcp=ctx-summarize`);
      assert.equal(res.status, 200);
      if ((await res.json()).summary) return;
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.fail(`conversation ${conv} has no summary after 10 s`);
  }

  function conversation(prefix, conv) {
    const client = new OpenAI({ baseURL: `${gw.url}${prefix}`, apiKey: 'unused', maxRetries: 0, timeout: 30000 });
    return async (messages) => {
      const n = fake.chatRequests().length;
      const { data, response } = await client.chat.completions
        .create({ model: 'smart', messages }, { headers: { 'X-Conversation-Id': conv } })
        .withResponse();
      assert.equal(fake.chatRequests().length, n + 1, 'one upstream request per turn');
      return { data, turns: response.headers.get('x-context-turns'), sent: fake.chatRequests().at(-1).body.messages };
    };
  }

  test(
    'LastN 2: after four turns only the last two whole turns reach the model, starting on a user message',
    withLogs(logs, async () => {
      const ask = conversation('/v1/lastn', `lastn-${process.pid}`);
      await ask([user('turn one')]);
      await ask([user('turn two')]);
      // turn three is a tool round trip: user, assistant tool call, tool result, assistant
      const call = { id: 'call_l3', type: 'function', function: { name: 'status', arguments: '{}' } };
      fake.next({
        body: {
          id: 'chatcmpl-l3',
          object: 'chat.completion',
          created: 1,
          model: 'gpt-4o-mini',
          choices: [{ index: 0, message: { role: 'assistant', content: null, tool_calls: [call] }, finish_reason: 'tool_calls' }],
        },
      });
      await ask([user('turn three')]);
      const toolMsg = { role: 'tool', tool_call_id: 'call_l3', content: 'all green' };
      await ask([toolMsg]);
      await ask([user('turn four')]);

      const last = await ask([user('turn five')]);
      const turn3 = [user('turn three'), { role: 'assistant', content: null, tool_calls: [call] }, toolMsg, assistant('reply to: turn three')];
      assert.deepEqual(last.sent, [system(PERSONA), ...turn3, ...turn('turn four'), user('turn five')]);
      assert.equal(last.turns, '6', 'two turns of 4 + 2 messages');
    })
  );

  test(
    'TokenBudget: exactly the most recent turns that fit maxContextTokens (counted with gpt-tokenizer)',
    withLogs(logs, async () => {
      const ask = conversation('/v1/budget', `budget-${process.pid}`);
      for (const q of BUDGET_QUESTIONS) await ask([user(q)]);
      const last = await ask([user(BUDGET_LAST)]);
      assert.deepEqual(last.sent, BUDGET_EXPECTED, `budget ${BUDGET} tokens; with turn 2 it would be ${BUDGET_WITH_TURN2}`);
      assert.equal(last.turns, '4');
    })
  );

  test(
    'TokenBudget: when persona and request alone exceed the budget no history is sent, the request is intact',
    withLogs(logs, async () => {
      const ask = conversation('/v1/budget', `budget-big-${process.pid}`);
      await ask([user('short question')]);
      const big = 'word '.repeat(BUDGET + 50).trim();
      const last = await ask([user(big)]);
      assert.deepEqual(last.sent, [system(PERSONA), user(big)]);
      assert.equal(last.turns, '0');
    })
  );

  test(
    'Summarize: past triggerTokens the old turns become a summary from the Mock target, sent as a system message',
    withLogs(logs, async () => {
      const ask = conversation('/v1/summarize', `summ-${process.pid}`);
      await ask([user(SUM_QUESTIONS[0])]);
      await ask([user(SUM_QUESTIONS[1])]);
      const third = await ask([user(SUM_QUESTIONS[2])]);
      // under the trigger so far: everything is sent, no summary
      assert.deepEqual(third.sent, [system(PERSONA), ...turn(SUM_QUESTIONS[0]), ...turn(SUM_QUESTIONS[1]), user(SUM_QUESTIONS[2])]);

      // the third answer pushed the history over triggerTokens: turn 1 is folded away (lastN 2 kept)
      // by a background request; wait until the summary is stored (a slow, sanitised build may
      // still be writing it when the client has its third answer)
      await waitForSummary(`summ-${process.pid}`);
      const fourth = await ask([user('Which power adapter does it use?')]);
      assert.deepEqual(fourth.sent, [
        system(PERSONA),
        system(SUMMARY_PREFIX + SUMMARY_TEXT),
        ...turn(SUM_QUESTIONS[1]),
        ...turn(SUM_QUESTIONS[2]),
        user('Which power adapter does it use?'),
      ]);
      assert.equal(fourth.turns, '4', 'the summary is not counted as a stored message');

      // and it keeps going: the history stays at two turns after the summary
      const fifth = await ask([user('Thanks!')]);
      assert.deepEqual(fifth.sent, [
        system(PERSONA),
        system(SUMMARY_PREFIX + SUMMARY_TEXT),
        ...turn(SUM_QUESTIONS[2]),
        ...turn('Which power adapter does it use?'),
        user('Thanks!'),
      ]);
    })
  );

  test(
    'Summarize: a turn whose request was in flight while the background summary landed is recorded on top of it, not refused as a conflict',
    withLogs(logs, async () => {
      const conv = `summ-race-${process.pid}`;
      const ask = conversation('/v1/summarize-slow', conv);
      await ask([user(SUM_QUESTIONS[0])]);
      await ask([user(SUM_QUESTIONS[1])]);
      // the third answer crosses triggerTokens: the summary request starts (300 ms at the Mock)
      await ask([user(SUM_QUESTIONS[2])]);
      // the fourth turn reads the conversation before the summary lands and is answered after it
      fake.next({ delayMs: 900 });
      const fourth = await ask([user('Which power adapter does it use?')]);
      assert.deepEqual(fourth.sent, [
        system(PERSONA),
        ...turn(SUM_QUESTIONS[0]),
        ...turn(SUM_QUESTIONS[1]),
        ...turn(SUM_QUESTIONS[2]),
        user('Which power adapter does it use?'),
      ], 'the fourth request was sent before the summary existed');
      const res = await fetch(`${gw.url}/v1/contexts/${encodeURIComponent(conv)}?mcp=ctx-summarize-slow`);
      assert.equal(res.status, 200);
      const stored = await res.json();
      assert.equal(stored.summary, SUMMARY_TEXT);
      assert.deepEqual(
        stored.messages.map((m) => [m.role, m.content]),
        [...turn(SUM_QUESTIONS[1]), ...turn(SUM_QUESTIONS[2]), ...turn('Which power adapter does it use?')].map((m) => [
          m.role,
          m.content,
        ]),
        'the summary folded turn 1 away and the fourth turn is appended after the kept turns'
      );
    })
  );
});
