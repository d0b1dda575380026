// matrix.test.mjs — every caller family in front of every target type, end to end: the official
// `openai` SDK (POST /v1/chat/completions) and `@anthropic-ai/sdk` (POST /v1/messages) × targets
// OpenAI, AzureOpenAI, Anthropic, Gemini, OpenAICompatible, Mock × stream / non-stream × a plain
// text turn, a tool call, an image. One gateway, one target per type, each fake started once.
// Each case checks what the SDK returns (text; the tool's name, call id shape and parsed
// arguments; the answer to an image), the stop / finish reason, the usage figures (equal to what
// the fake reported; for Mock the exact tokenizer counts), and what the fake upstream received
// (URL, auth header, anthropic-version, the translated body: system, max_tokens, tools, the image
// in the provider's own format).
//
// Mock answers in the gateway itself: it makes no tool calls and does not look at images. Its
// tool and image cases check that the request is accepted and answered sensibly — the echo of the
// last user text, finish stop / end_turn, exact usage — not a tool call.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';

import { startFakeOpenAI } from '../fakes/openai.mjs';
import { startFakeAnthropic } from '../fakes/anthropic.mjs';
import { startFakeGemini } from '../fakes/gemini.mjs';
import { startGateway, withLogs } from '../lib/gateway.mjs';
import { chatPromptTokens, textTokens } from '../lib/tokens.mjs';

const CLIENT_KEY = 'sk-client-matrix-0001';
const KEYS = { openai: 'sk-up-openai', azure: 'az-up-key', anthropic: 'sk-ant-up', gemini: 'g-up-key' };
const AZ = { deployment: 'dep-azure', apiVersion: '2024-10-21' };
const SYSTEM = 'Be brief.';
// a 1×1 transparent PNG
const PNG =
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==';
const WEATHER_SCHEMA = { type: 'object', properties: { location: { type: 'string' } }, required: ['location'] };
// what every fake's schema sampler fills the call's arguments with
const SAMPLE_ARGS = { location: 'location-1' };

const TARGETS = {
  openai: { model: 'm-openai', family: 'openai' },
  azure: { model: 'm-azure', family: 'openai' },
  anthropic: { model: 'm-anthropic', family: 'anthropic' },
  gemini: { model: 'm-gemini', family: 'gemini' },
  compat: { model: 'm-compat', family: 'openai' },
  mock: { model: 'm-mock', family: 'mock' },
};

// The user turn of each kind: its text, and whether it carries the image.
const KINDS = {
  plain: { text: 'Hello there, gateway' },
  tool: { text: 'please use the tool for the weather in Rome' },
  image: { text: 'What is in this picture?', image: true },
};

/** The request of one kind in OpenAI's Chat Completions form (no max_tokens: a target default). */
function openaiRequest(model, kind) {
  const k = KINDS[kind];
  const content = k.image
    ? [
        { type: 'text', text: k.text },
        { type: 'image_url', image_url: { url: `data:image/png;base64,${PNG}` } },
      ]
    : k.text;
  const req = { model, messages: [{ role: 'system', content: SYSTEM }, { role: 'user', content }] };
  if (kind === 'tool') {
    req.tools = [{ type: 'function', function: { name: 'get_weather', description: 'The weather in a city', parameters: WEATHER_SCHEMA } }];
  }
  return req;
}

/** The same request in Anthropic's Messages form (max_tokens 64, required there). */
function anthropicRequest(model, kind) {
  const k = KINDS[kind];
  const content = k.image
    ? [
        { type: 'text', text: k.text },
        { type: 'image', source: { type: 'base64', media_type: 'image/png', data: PNG } },
      ]
    : k.text;
  const req = { model, max_tokens: 64, system: SYSTEM, messages: [{ role: 'user', content }] };
  if (kind === 'tool') req.tools = [{ name: 'get_weather', description: 'The weather in a city', input_schema: WEATHER_SCHEMA }];
  return req;
}

describe('caller family × target type × stream × content', () => {
  let fakes;
  let gw;
  let openai;
  let anthropic;

  before(async () => {
    fakes = {
      openai: await startFakeOpenAI({ apiKey: KEYS.openai }),
      azure: await startFakeOpenAI({ azure: AZ, apiKey: KEYS.azure }),
      anthropic: await startFakeAnthropic({ apiKey: KEYS.anthropic, auth: 'x-api-key' }),
      gemini: await startFakeGemini({ apiKey: KEYS.gemini }),
      compat: await startFakeOpenAI(),
    };
    gw = await startGateway({
      manifests: `
apiVersion: v1
kind: Secret
metadata: {name: up}
stringData: {openai: ${KEYS.openai}, azure: ${KEYS.azure}, anthropic: ${KEYS.anthropic}, gemini: ${KEYS.gemini}}
---
apiVersion: v1
kind: Secret
metadata: {name: clients}
stringData: {one: ${CLIENT_KEY}}
---
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-matrix}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - name: m-openai
    type: OpenAI
    config: {endpoint: "${fakes.openai.baseURL}", modelName: gpt-4o-mini, apiKeyRef: {name: up, key: openai}}
  - name: m-azure
    type: AzureOpenAI
    config: {endpoint: "${fakes.azure.url}", deployment: ${AZ.deployment}, apiVersion: "${AZ.apiVersion}", modelName: gpt-4o, apiKeyRef: {name: up, key: azure}}
  - name: m-anthropic
    type: Anthropic
    config: {endpoint: "${fakes.anthropic.baseURL}", modelName: claude-sonnet-4-20250514, apiKeyRef: {name: up, key: anthropic}}
  - name: m-gemini
    type: Gemini
    config: {endpoint: "${fakes.gemini.baseURL}", modelName: gemini-2.5-flash, apiKeyRef: {name: up, key: gemini}}
  - name: m-compat
    type: OpenAICompatible
    config: {endpoint: "${fakes.compat.baseURL}", modelName: local-llama}
  - name: m-mock
    type: Mock
    config: {modelName: gpt-4o-mini, mock: {chunks: 3}}
  routes:
  - name: all
    backends: [{target: m-openai}, {target: m-azure}, {target: m-anthropic}, {target: m-gemini}, {target: m-compat}, {target: m-mock}]
  authentication:
    type: APIKey
    apiKeys:
    - {name: one, secretRef: {name: clients, key: one}}
`,
    });
    openai = new OpenAI({ baseURL: gw.baseURL, apiKey: CLIENT_KEY, maxRetries: 0, timeout: 20000 });
    anthropic = new Anthropic({ baseURL: gw.url, apiKey: CLIENT_KEY, maxRetries: 0, timeout: 20000 });
  });

  after(async () => {
    if (gw) await gw.stop();
    for (const f of Object.values(fakes || {})) await f.close();
  });

  const logs = () => gw;

  /** The last request the target's fake received (null for Mock), and how many it got meanwhile. */
  function lastUpstream(target, before) {
    if (target === 'mock') return null;
    const f = fakes[target];
    const reqs = target === 'anthropic' ? f.messageRequests() : target === 'gemini' ? f.generateRequests() : f.chatRequests();
    assert.equal(reqs.length, before + 1, 'exactly one upstream request');
    return reqs[reqs.length - 1];
  }
  function upstreamCount(target) {
    if (target === 'mock') return 0;
    const f = fakes[target];
    return (target === 'anthropic' ? f.messageRequests() : target === 'gemini' ? f.generateRequests() : f.chatRequests()).length;
  }

  /** The answer text the target produces for this kind (what the fake or Mock says). */
  function expectedText(target, kind) {
    const k = KINDS[kind];
    if (target === 'mock') return k.text; // Mock echoes the last user text (its text parts)
    if (TARGETS[target].family === 'openai') return `reply to: ${k.text}`; // this fake does not count images
    return `reply to: ${k.text}${k.image ? ' (images: 1)' : ''}`;
  }

  /** The usage the upstream reported, in OpenAI's terms {prompt, completion}, or Mock's exact counts. */
  function expectedUsage(target, kind, up, text) {
    if (target === 'mock') {
      const k = KINDS[kind];
      return {
        prompt: chatPromptTokens([
          { role: 'system', content: SYSTEM },
          { role: 'user', content: k.text },
        ]),
        completion: textTokens(text),
      };
    }
    const u = up.responseUsage;
    if (TARGETS[target].family === 'openai') return { prompt: u.prompt_tokens, completion: u.completion_tokens };
    if (target === 'anthropic') return { prompt: u.input_tokens, completion: u.output_tokens };
    return { prompt: u.promptTokenCount, completion: u.candidatesTokenCount };
  }

  /** Call ids as each provider makes them (the gateway passes them through to both families). */
  function assertCallId(target, id) {
    const shapes = { anthropic: /^toolu_fake/, gemini: /^call_[0-9a-f]{16}_0_0$/ };
    assert.match(id, shapes[target] || /^call_fake\d+$/, `tool call id ${id}`);
  }

  /** What the upstream got: URL, auth, headers, the translated body. */
  function assertUpstream(target, kind, up, { stream, caller }) {
    if (target === 'mock') return;
    const h = up.headers;
    assert.notEqual(h.authorization, `Bearer ${CLIENT_KEY}`, "the caller's key never goes upstream");
    assert.equal(h['x-api-key'] === CLIENT_KEY, false);
    const wantMax = caller === 'anthropic' ? 64 : undefined;
    const k = KINDS[kind];
    if (TARGETS[target].family === 'openai') {
      if (target === 'azure') {
        assert.equal(up.path, `/openai/deployments/${AZ.deployment}/chat/completions?api-version=${AZ.apiVersion}`);
        assert.equal(h['api-key'], KEYS.azure);
        assert.equal(h.authorization, undefined, 'Azure: the key in api-key only');
      } else {
        assert.equal(up.path, '/v1/chat/completions');
        if (target === 'openai') assert.equal(h.authorization, `Bearer ${KEYS.openai}`);
        else assert.equal(h.authorization, undefined, 'OpenAICompatible without a key: no Authorization');
      }
      const b = up.body;
      assert.equal(b.model, { openai: 'gpt-4o-mini', azure: 'gpt-4o', compat: 'local-llama' }[target]);
      assert.equal(b.max_tokens, wantMax);
      assert.equal(b.stream === true, stream);
      if (stream) assert.deepEqual(b.stream_options, { include_usage: true });
      assert.deepEqual(b.messages[0], { role: 'system', content: SYSTEM });
      assert.equal(b.messages.length, 2);
      assert.equal(b.messages[1].role, 'user');
      if (k.image) {
        assert.deepEqual(b.messages[1].content, [
          { type: 'text', text: k.text },
          { type: 'image_url', image_url: { url: `data:image/png;base64,${PNG}` } },
        ]);
      } else {
        assert.equal(b.messages[1].content, k.text);
      }
      if (kind === 'tool') {
        assert.equal(b.tools.length, 1);
        assert.equal(b.tools[0].type, 'function');
        assert.equal(b.tools[0].function.name, 'get_weather');
        assert.deepEqual(b.tools[0].function.parameters, WEATHER_SCHEMA);
      } else {
        assert.equal(b.tools, undefined);
      }
    } else if (target === 'anthropic') {
      assert.equal(up.path, '/v1/messages');
      assert.equal(h['x-api-key'], KEYS.anthropic);
      assert.equal(h['anthropic-version'], '2023-06-01');
      const b = up.body;
      assert.equal(b.model, 'claude-sonnet-4-20250514');
      if (caller === 'anthropic') {
        // same family: the SDK's own body, only the model replaced (nothing translated)
        const sent = { ...anthropicRequest('claude-sonnet-4-20250514', kind), ...(stream ? { stream: true } : {}) };
        assert.deepEqual(b, sent, "the caller's own request, model replaced");
      }
      assert.equal(b.system, SYSTEM, 'the system message became the top-level system string');
      assert.equal(b.max_tokens, wantMax ?? 4096, 'max_tokens: the request\'s, else the default 4096');
      assert.equal(b.stream === true, stream);
      assert.equal(b.messages.length, 1);
      assert.equal(b.messages[0].role, 'user');
      const blocks = typeof b.messages[0].content === 'string' ? [{ type: 'text', text: b.messages[0].content }] : b.messages[0].content;
      assert.deepEqual(blocks[0], { type: 'text', text: k.text });
      if (k.image) assert.deepEqual(blocks[1], { type: 'image', source: { type: 'base64', media_type: 'image/png', data: PNG } });
      else assert.equal(blocks.length, 1);
      if (kind === 'tool') {
        assert.deepEqual(b.tools, [{ name: 'get_weather', description: 'The weather in a city', input_schema: WEATHER_SCHEMA }]);
      } else {
        assert.equal(b.tools, undefined);
      }
    } else {
      const method = stream ? 'streamGenerateContent?alt=sse' : 'generateContent';
      assert.equal(up.path, `/v1beta/models/gemini-2.5-flash:${method}`);
      assert.equal(h['x-goog-api-key'], KEYS.gemini);
      const b = up.body;
      assert.deepEqual(b.systemInstruction, { parts: [{ text: SYSTEM }] });
      assert.equal(b.generationConfig?.maxOutputTokens, wantMax);
      assert.equal(b.contents.length, 1);
      assert.equal(b.contents[0].role, 'user');
      assert.deepEqual(b.contents[0].parts[0], { text: k.text });
      if (k.image) assert.deepEqual(b.contents[0].parts[1], { inlineData: { mimeType: 'image/png', data: PNG } });
      else assert.equal(b.contents[0].parts.length, 1);
      if (kind === 'tool') {
        assert.equal(b.tools.length, 1);
        const decl = b.tools[0].functionDeclarations;
        assert.equal(decl.length, 1);
        assert.equal(decl[0].name, 'get_weather');
        assert.deepEqual(decl[0].parametersJsonSchema, WEATHER_SCHEMA);
      } else {
        assert.equal(b.tools, undefined);
      }
    }
  }

  const makesToolCall = (target, kind) => kind === 'tool' && target !== 'mock';

  /** One call through the openai SDK: {text, toolCalls, finish, usage}. */
  async function viaOpenAI(target, kind, stream) {
    const req = openaiRequest(TARGETS[target].model, kind);
    if (!stream) {
      const r = await openai.chat.completions.create(req);
      assert.equal(r.object, 'chat.completion');
      assert.equal(r.choices.length, 1);
      const m = r.choices[0].message;
      return { text: m.content, toolCalls: m.tool_calls || [], finish: r.choices[0].finish_reason, usage: r.usage, model: r.model };
    }
    const s = await openai.chat.completions.create({ ...req, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let finish = null;
    let usage = null;
    let argDeltas = 0;
    let usageChunks = 0;
    const calls = [];
    for await (const chunk of s) {
      if (chunk.usage) {
        usageChunks++;
        usage = chunk.usage;
        assert.equal(chunk.choices.length, 0, 'the usage chunk has no choices');
      }
      for (const c of chunk.choices) {
        if (typeof c.delta.content === 'string') text += c.delta.content;
        for (const tc of c.delta.tool_calls || []) {
          const call = (calls[tc.index] ||= { id: '', type: '', function: { name: '', arguments: '' } });
          if (tc.id) call.id += tc.id;
          if (tc.type) call.type = tc.type;
          if (tc.function?.name) call.function.name += tc.function.name;
          if (tc.function?.arguments) {
            call.function.arguments += tc.function.arguments;
            argDeltas++;
          }
        }
        if (c.finish_reason) {
          assert.equal(finish, null, 'one finish_reason');
          finish = c.finish_reason;
        }
      }
    }
    assert.equal(usageChunks, 1, 'one usage chunk (include_usage)');
    if (makesToolCall(target, kind)) assert.ok(argDeltas >= 1, 'argument deltas arrived');
    return { text: text === '' && calls.length ? null : text, toolCalls: calls, finish, usage };
  }

  /** One call through @anthropic-ai/sdk: {text, toolUses, stop, usage}. */
  async function viaAnthropic(target, kind, stream) {
    const req = anthropicRequest(TARGETS[target].model, kind);
    let m;
    if (!stream) {
      m = await anthropic.messages.create(req);
    } else {
      const s = anthropic.messages.stream(req);
      let deltaText = '';
      let json = '';
      s.on('text', (t) => (deltaText += t));
      s.on('inputJson', (partial) => (json += partial));
      m = await s.finalMessage();
      const t = m.content.filter((b) => b.type === 'text').map((b) => b.text).join('');
      assert.equal(deltaText, t, 'the text deltas add up to the final text');
      if (makesToolCall(target, kind)) assert.deepEqual(JSON.parse(json), m.content.find((b) => b.type === 'tool_use').input);
    }
    assert.equal(m.type, 'message');
    assert.equal(m.role, 'assistant');
    // translated answers carry the name the client sent; an Anthropic target's answer goes to an
    // Anthropic caller as the provider wrote it (same family, as OpenAI -> OpenAI-family)
    const wantModel = target === 'anthropic' ? 'claude-sonnet-4-20250514' : TARGETS[target].model;
    assert.equal(m.model, wantModel, 'model: the name the client sent, or the provider\'s own (same family)');
    assert.match(m.id, /^msg_/);
    const texts = m.content.filter((b) => b.type === 'text');
    return {
      text: texts.length ? texts.map((b) => b.text).join('') : null,
      toolUses: m.content.filter((b) => b.type === 'tool_use'),
      stop: m.stop_reason,
      usage: m.usage,
    };
  }

  for (const caller of ['openai', 'anthropic']) {
    for (const target of Object.keys(TARGETS)) {
      for (const stream of [false, true]) {
        for (const kind of Object.keys(KINDS)) {
          const name = `${caller} SDK → ${target} (${stream ? 'stream' : 'whole'}, ${kind})` + (target === 'mock' && kind !== 'plain' ? ' — Mock: accepted, echoed' : '');
          test(
            name,
            withLogs(logs, async () => {
              const before = upstreamCount(target);
              const r = caller === 'openai' ? await viaOpenAI(target, kind, stream) : await viaAnthropic(target, kind, stream);
              const up = lastUpstream(target, before);
              assertUpstream(target, kind, up, { stream, caller });

              const toolCall = makesToolCall(target, kind);
              if (toolCall) {
                const calls = caller === 'openai' ? r.toolCalls : r.toolUses;
                assert.equal(calls.length, 1, 'one tool call');
                if (caller === 'openai') {
                  assert.equal(calls[0].type, 'function');
                  assert.equal(calls[0].function.name, 'get_weather');
                  assertCallId(target, calls[0].id);
                  assert.deepEqual(JSON.parse(calls[0].function.arguments), SAMPLE_ARGS);
                  assert.equal(r.finish, 'tool_calls');
                } else {
                  assert.equal(calls[0].name, 'get_weather');
                  assertCallId(target, calls[0].id);
                  assert.deepEqual(calls[0].input, SAMPLE_ARGS);
                  assert.equal(r.stop, 'tool_use');
                }
                assert.equal(r.text, null, 'no text besides the tool call');
              } else {
                assert.equal(r.text, expectedText(target, kind));
                if (caller === 'openai') assert.equal(r.finish, 'stop');
                else assert.equal(r.stop, 'end_turn');
                if (caller === 'openai') assert.equal(r.toolCalls.length, 0);
                else assert.equal(r.toolUses.length, 0);
              }

              const want = expectedUsage(target, kind, up, r.text ?? '');
              assert.ok(want.prompt > 0 && want.completion > 0, `the reference usage is not empty: ${JSON.stringify(want)}`);
              if (caller === 'openai') {
                assert.equal(r.usage.prompt_tokens, want.prompt, 'prompt_tokens');
                assert.equal(r.usage.completion_tokens, want.completion, 'completion_tokens');
                assert.equal(r.usage.total_tokens, want.prompt + want.completion, 'total_tokens');
              } else {
                assert.equal(r.usage.input_tokens, want.prompt, 'input_tokens');
                assert.equal(r.usage.output_tokens, want.completion, 'output_tokens');
              }
            })
          );
        }
      }
    }
  }

  test(
    'raw /messages stream: the event order message_start, content_block_start, deltas, content_block_stop, message_delta, message_stop',
    withLogs(logs, async () => {
      for (const target of ['openai', 'gemini']) {
        const res = await fetch(`${gw.url}/v1/messages`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-api-key': CLIENT_KEY, 'anthropic-version': '2023-06-01' },
          body: JSON.stringify({ ...anthropicRequest(TARGETS[target].model, 'plain'), stream: true }),
        });
        assert.equal(res.status, 200);
        assert.match(res.headers.get('content-type'), /^text\/event-stream/);
        const raw = await res.text();
        const events = raw
          .split(/\r?\n\r?\n/)
          .filter((b) => b.trim())
          .map((b) => {
            const ev = b.match(/^event: (.*)$/m)[1];
            const data = JSON.parse(b.match(/^data: (.*)$/m)[1]);
            assert.equal(data.type, ev, 'event name = data.type');
            return data;
          })
          .filter((e) => e.type !== 'ping');
        const order = events.map((e) => e.type);
        const deltas = order.filter((t) => t === 'content_block_delta').length;
        assert.ok(deltas >= 2, `several text deltas (${target}): ${order}`);
        assert.deepEqual(order, ['message_start', 'content_block_start', ...Array(deltas).fill('content_block_delta'), 'content_block_stop', 'message_delta', 'message_stop']);
        assert.equal(events[0].message.usage.output_tokens, 0);
        assert.deepEqual(events[1].content_block, { type: 'text', text: '' });
        assert.equal(events.filter((e) => e.type === 'content_block_delta').map((e) => e.delta.text).join(''), expectedText(target, 'plain'));
        const md = events[events.length - 2];
        assert.equal(md.delta.stop_reason, 'end_turn');
        assert.ok(md.usage.output_tokens > 0);
      }
    })
  );
});
