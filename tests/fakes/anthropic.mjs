// anthropic.mjs — a fake Anthropic API server for integration tests: speaks the Messages API
// (POST /v1/messages, JSON and the SSE event stream) as api.anthropic.com does, validates requests
// the way Anthropic does for what an adapter can get wrong, records every request, and can be told
// per request to fail, overload, cut or stall a stream.
//
//   const fake = await startFakeAnthropic({ apiKey: 'sk-ant-fake' });  // 127.0.0.1, a free port
//   fake.baseURL                  // "http://127.0.0.1:PORT" (the SDK appends /v1/messages)
//   fake.next({ error: 'overloaded' })   // the next request gets this behaviour
//   fake.setDefault({ text: 'hi' })      // every request without a queued behaviour
//   fake.requests                 // every request: {method, path, headers, body, raw, receivedAt
//                                 // (performance.now() once its body had arrived), responseStatus,
//                                 // responseBody, responseText, responseUsage, sentEvents, ...}
//   fake.messageRequests()        // POST /v1/messages only (alias: chatRequests())
//   fake.reset(); await fake.close()
//
// Options: apiKey (the key must equal it: 401 authentication_error otherwise; without it any key
// is accepted), auth ('either' (default): the key in x-api-key, else in Authorization: Bearer —
// @anthropic-ai/sdk 1.x sends `Authorization: Bearer <apiKey>`; 'x-api-key' or 'bearer': only that
// header counts), models (ids for GET /v1/models), allowExtraFields (do not reject unknown top-level
// request fields), default (the default behaviour).
//
// What it checks, in this order, each failure answered with Anthropic's error JSON
// {"type":"error","error":{"type","message"},"request_id"}: the route (404 not_found_error), x-api-key
// (401), anthropic-version header present (400), JSON body, no unknown top-level field, model and
// max_tokens (integer >= 1) present, messages a non-empty list whose roles are user/assistant only
// ("system" is a top-level field) and whose first message is user, content a string or a list of
// known blocks (text non-empty; image with a base64 source of a supported media_type or a url
// source), every tool_result answering a tool_use of the previous message and every tool_use
// answered in the next message, system a string or text blocks, temperature within 0..1, tools
// with a valid name and an input_schema, tool_choice of a known type.
//
// The default answer: one text block "reply to: <last user text>" (the text blocks of the last user
// message, or when it has none the text of its tool_result blocks), followed by " (images: N)" when
// the request carries N image blocks; stop_reason end_turn. stop_sequences cut the text (stop_reason
// stop_sequence), max_tokens truncates it to that many words (stop_reason max_tokens). Usage is
// deterministic: input_tokens = anthropicInputTokens(body) (words), output_tokens = the words of
// the answer's blocks. When the request has tools and the last user text contains "use the tool"
// (or tool_choice is any/tool, or the behaviour has `tool`), the answer is a tool_use block
// {id "toolu_fake…", name (tool_choice's, else the first tool's), input (from the input_schema)}
// with stop_reason tool_use. With stream: true the events come in the documented order:
// message_start, content_block_start, ping, content_block_delta… (text as several text_delta,
// tool input as several input_json_delta pieces split mid-JSON, thinking as thinking_delta then
// signature_delta), content_block_stop, …, message_delta {stop_reason, usage}, message_stop.
//
// Behaviour fields (all optional):
//   status, headers, body  answer with this status/body verbatim (object → JSON, string → text);
//                          a status >= 400 without body gets Anthropic's error JSON for it
//   error: 'overloaded'    529 overloaded_error (also 'rate_limit' 429, 'api' 500,
//                          'invalid_request' 400, 'authentication' 401, 'permission' 403,
//                          'not_found' 404, 'request_too_large' 413)
//   retryAfter: S          with a 429 (or error: 'rate_limit'): a retry-after: S header
//   delayMs                wait before the response head
//   chunkDelayMs           stream: wait between events
//   text                   the answer text (instead of "reply to: …")
//   chunks: N              stream: the text in N text_delta events (default: one per word)
//   tool: true | {name, input}   answer with a tool_use block (even without "use the tool")
//   toolText: '...'        a text block before the tool_use block
//   thinking: true | '...' a thinking block (with a signature) first
//   cutAfterEvents: N      stream: send N events (ping included), then destroy the socket
//   errorEventAfter: N     stream: send N events, then `event: error` (overloaded_error), end
//   stallAfterEvents: N    stream: send N events, then nothing (until the peer closes)
//   cutBody: 'head'|'half' non-stream: send the head (and half the JSON), then destroy the socket
//   destroy: true          destroy the socket as soon as the request arrived
//   hang: true             never answer (until the client goes away)
import crypto from 'node:crypto';

import {
  cutConnection,
  sendJSON,
  sendVerbatim,
  sleep,
  splitEvenly,
  splitText,
  startRecordingServer,
  sampleFromSchema,
  wordCount,
  writePiece,
} from './server.mjs';

let idCounter = 0;
const nextId = (prefix) => `${prefix}${String(++idCounter).padStart(4, '0')}${crypto.randomBytes(8).toString('hex')}`;

const ERROR_TYPES = {
  400: ['invalid_request_error', 'Bad request.'],
  401: ['authentication_error', 'invalid x-api-key'],
  402: ['billing_error', 'Your credit balance is too low to access the Anthropic API.'],
  403: ['permission_error', 'Your API key does not have permission to use the specified resource.'],
  404: ['not_found_error', 'Not found.'],
  413: ['request_too_large', 'Request exceeds the maximum allowed number of bytes.'],
  429: ['rate_limit_error', 'Number of request tokens has exceeded your per-minute rate limit.'],
  500: ['api_error', 'Internal server error'],
  529: ['overloaded_error', 'Overloaded'],
};
const NAMED_ERRORS = {
  overloaded: 529,
  rate_limit: 429,
  api: 500,
  invalid_request: 400,
  authentication: 401,
  permission: 403,
  not_found: 404,
  request_too_large: 413,
};

/** Anthropic's error JSON for an HTTP status (message: the given one or Anthropic's usual). */
export function anthropicErrorBody(status, message) {
  const [type, msg] = ERROR_TYPES[status] || (status >= 500 ? ['api_error', 'Internal server error'] : ['invalid_request_error', `HTTP ${status}`]);
  return { type: 'error', error: { type, message: message ?? msg }, request_id: nextId('req_fake') };
}

const TOP_LEVEL_FIELDS = new Set([
  'model',
  'messages',
  'max_tokens',
  'system',
  'metadata',
  'stop_sequences',
  'stream',
  'temperature',
  'top_p',
  'top_k',
  'tools',
  'tool_choice',
  'thinking',
  'service_tier',
  'container',
  'mcp_servers',
  'context_management',
]);
const BLOCK_TYPES = new Set([
  'text',
  'image',
  'document',
  'search_result',
  'tool_use',
  'tool_result',
  'thinking',
  'redacted_thinking',
  'server_tool_use',
  'web_search_tool_result',
]);
const IMAGE_TYPES = ['image/jpeg', 'image/png', 'image/gif', 'image/webp'];

const blocksOf = (content) => (typeof content === 'string' ? [{ type: 'text', text: content }] : Array.isArray(content) ? content : []);

function toolResultText(block) {
  if (typeof block.content === 'string') return block.content;
  return blocksOf(block.content)
    .filter((b) => b && b.type === 'text')
    .map((b) => b.text)
    .join('');
}

/** The text the default answer replies to: the last user message's text blocks, else its tool results. */
export function lastUserText(body) {
  const msgs = Array.isArray(body?.messages) ? body.messages : [];
  for (let i = msgs.length - 1; i >= 0; i--) {
    if (msgs[i]?.role !== 'user') continue;
    const blocks = blocksOf(msgs[i].content);
    const texts = blocks.filter((b) => b?.type === 'text').map((b) => b.text);
    if (texts.length) return texts.join('');
    return blocks
      .filter((b) => b?.type === 'tool_result')
      .map(toolResultText)
      .join('');
  }
  return '';
}

/** The number of image blocks in the request (in messages and inside tool results). */
export function imageCount(body) {
  let n = 0;
  for (const m of Array.isArray(body?.messages) ? body.messages : []) {
    for (const b of blocksOf(m?.content)) {
      if (b?.type === 'image') n++;
      if (b?.type === 'tool_result') n += blocksOf(b.content).filter((x) => x?.type === 'image').length;
    }
  }
  return n;
}

/** The fake's input_tokens: the words of system, of every text block, tool result and tool input. */
export function anthropicInputTokens(body) {
  let n = 0;
  for (const b of blocksOf(body?.system)) n += wordCount(b?.text);
  for (const m of Array.isArray(body?.messages) ? body.messages : []) {
    for (const b of blocksOf(m?.content)) {
      if (b?.type === 'text') n += wordCount(b.text);
      else if (b?.type === 'tool_result') n += wordCount(toolResultText(b));
      else if (b?.type === 'tool_use') n += wordCount(JSON.stringify(b.input ?? {}));
    }
  }
  return n;
}

/** The fake's output_tokens for a list of content blocks. */
export function anthropicOutputTokens(content) {
  let n = 0;
  for (const b of content) {
    if (b.type === 'text') n += wordCount(b.text);
    else if (b.type === 'thinking') n += wordCount(b.thinking);
    else if (b.type === 'tool_use') n += wordCount(JSON.stringify(b.input));
  }
  return n;
}

// The first problem Anthropic would report for this request body, as [status, message], or null.
function validate(body, options) {
  if (body === undefined) return [400, 'There was an issue with the format of your request: the body is not valid JSON.'];
  if (!body || typeof body !== 'object' || Array.isArray(body)) return [400, 'Input should be a valid dictionary or object'];
  if (!options.allowExtraFields) {
    for (const k of Object.keys(body)) if (!TOP_LEVEL_FIELDS.has(k)) return [400, `${k}: Extra inputs are not permitted`];
  }
  if (body.model === undefined) return [400, 'model: Field required'];
  if (typeof body.model !== 'string' || !body.model) return [400, 'model: Input should be a valid string'];
  if (body.max_tokens === undefined) return [400, 'max_tokens: Field required'];
  if (!Number.isInteger(body.max_tokens)) return [400, 'max_tokens: Input should be a valid integer'];
  if (body.max_tokens < 1) return [400, 'max_tokens: Input should be greater than or equal to 1'];
  if (body.messages === undefined) return [400, 'messages: Field required'];
  if (!Array.isArray(body.messages)) return [400, 'messages: Input should be a valid list'];
  if (!body.messages.length) return [400, 'messages: at least one message is required'];
  if (body.stream !== undefined && typeof body.stream !== 'boolean') return [400, 'stream: Input should be a valid boolean'];
  if (body.system !== undefined) {
    if (typeof body.system !== 'string') {
      if (!Array.isArray(body.system)) return [400, 'system: Input should be a valid list'];
      for (const [j, b] of body.system.entries()) {
        if (b?.type !== 'text' || typeof b.text !== 'string') return [400, `system.${j}.type: Input should be 'text'`];
      }
    }
  }
  if (body.temperature !== undefined) {
    if (typeof body.temperature !== 'number') return [400, 'temperature: Input should be a valid number'];
    if (body.temperature < 0) return [400, 'temperature: Input should be greater than or equal to 0'];
    if (body.temperature > 1) return [400, 'temperature: Input should be less than or equal to 1'];
  }
  if (body.stop_sequences !== undefined) {
    if (!Array.isArray(body.stop_sequences) || body.stop_sequences.some((s) => typeof s !== 'string')) {
      return [400, 'stop_sequences: Input should be a valid list of strings'];
    }
  }
  for (const [i, m] of body.messages.entries()) {
    if (!m || typeof m !== 'object') return [400, `messages.${i}: Input should be a valid dictionary or object`];
    if (m.role === 'system') {
      return [
        400,
        'messages: Unexpected role "system". The Messages API accepts a top-level `system` parameter, not "system" as an input message role.',
      ];
    }
    if (m.role !== 'user' && m.role !== 'assistant') return [400, `messages.${i}.role: Input should be 'user' or 'assistant'`];
    if (i === 0 && m.role !== 'user') return [400, 'messages: first message must use the "user" role'];
    if (m.content === undefined) return [400, `messages.${i}.content: Field required`];
    const finalAssistant = i === body.messages.length - 1 && m.role === 'assistant';
    if (typeof m.content === 'string') {
      if (!m.content && !finalAssistant) {
        return [400, `messages.${i}: all messages must have non-empty content except for the optional final assistant message`];
      }
      continue;
    }
    if (!Array.isArray(m.content)) return [400, `messages.${i}.content: Input should be a valid list`];
    if (!m.content.length && !finalAssistant) {
      return [400, `messages.${i}: all messages must have non-empty content except for the optional final assistant message`];
    }
    for (const [j, b] of m.content.entries()) {
      const at = `messages.${i}.content.${j}`;
      if (!b || typeof b !== 'object' || !BLOCK_TYPES.has(b.type)) {
        return [400, `${at}: Input tag '${b?.type}' found using 'type' does not match any of the expected tags`];
      }
      if (b.type === 'text') {
        if (typeof b.text !== 'string') return [400, `${at}.text.text: Field required`];
        if (!b.text) return [400, 'messages: text content blocks must be non-empty'];
      }
      if (b.type === 'image') {
        const src = b.source;
        if (!src || typeof src !== 'object') return [400, `${at}.image.source: Field required`];
        if (src.type === 'base64') {
          if (!IMAGE_TYPES.includes(src.media_type)) {
            return [400, `${at}.image.source.base64.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'`];
          }
          if (typeof src.data !== 'string' || !src.data) return [400, `${at}.image.source.base64.data: Field required`];
        } else if (src.type === 'url') {
          if (typeof src.url !== 'string' || !src.url) return [400, `${at}.image.source.url.url: Field required`];
        } else {
          return [400, `${at}.image.source: Input tag '${src.type}' found using 'type' does not match any of the expected tags: 'base64', 'url', 'file'`];
        }
      }
      if (b.type === 'tool_use') {
        if (m.role !== 'assistant') return [400, `${at}: tool_use blocks can only appear in assistant messages`];
        if (typeof b.id !== 'string' || typeof b.name !== 'string') return [400, `${at}.tool_use: id and name are required`];
        if (!b.input || typeof b.input !== 'object' || Array.isArray(b.input)) return [400, `${at}.tool_use.input: Input should be a valid dictionary`];
      }
      if (b.type === 'tool_result') {
        if (m.role !== 'user') return [400, `${at}: tool_result blocks can only appear in user messages`];
        if (typeof b.tool_use_id !== 'string') return [400, `${at}.tool_result.tool_use_id: Field required`];
      }
    }
  }
  // tool_use ↔ tool_result pairing across neighbouring messages
  for (const [i, m] of body.messages.entries()) {
    const uses = blocksOf(m.content)
      .filter((b) => b.type === 'tool_use')
      .map((b) => b.id);
    const results = blocksOf(m.content)
      .filter((b) => b.type === 'tool_result')
      .map((b) => b.tool_use_id);
    if (results.length) {
      const prev = i > 0 ? blocksOf(body.messages[i - 1].content).filter((b) => b.type === 'tool_use').map((b) => b.id) : [];
      const stray = results.filter((id) => !prev.includes(id));
      if (stray.length) {
        return [
          400,
          `messages.${i}.content.0: unexpected \`tool_use_id\` found in \`tool_result\` blocks: ${stray.join(', ')}. Each \`tool_result\` block must have a corresponding \`tool_use\` block in the previous message.`,
        ];
      }
    }
    if (uses.length && i + 1 < body.messages.length) {
      const next = blocksOf(body.messages[i + 1].content)
        .filter((b) => b.type === 'tool_result')
        .map((b) => b.tool_use_id);
      const missing = uses.filter((id) => !next.includes(id));
      if (missing.length) {
        return [
          400,
          `messages.${i}: \`tool_use\` ids were found without \`tool_result\` blocks immediately after: ${missing.join(', ')}. Each \`tool_use\` block must have a corresponding \`tool_result\` block in the next message.`,
        ];
      }
    }
  }
  if (body.tools !== undefined) {
    if (!Array.isArray(body.tools)) return [400, 'tools: Input should be a valid list'];
    for (const [i, t] of body.tools.entries()) {
      if (!t || typeof t !== 'object') return [400, `tools.${i}: Input should be a valid dictionary or object`];
      if (t.type !== undefined && t.type !== 'custom') continue; // a server tool (web_search_…)
      if (typeof t.name !== 'string' || !/^[a-zA-Z0-9_-]{1,128}$/.test(t.name)) {
        return [400, `tools.${i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{1,128}$'`];
      }
      if (t.input_schema === undefined) return [400, `tools.${i}.custom.input_schema: Field required`];
      if (!t.input_schema || typeof t.input_schema !== 'object' || t.input_schema.type !== 'object') {
        return [400, `tools.${i}.custom.input_schema.type: Input should be 'object'`];
      }
    }
  }
  if (body.tool_choice !== undefined) {
    const tc = body.tool_choice;
    if (!tc || !['auto', 'any', 'tool', 'none'].includes(tc.type)) {
      return [400, `tool_choice: Input tag '${tc?.type}' found using 'type' does not match any of the expected tags: 'auto', 'any', 'tool', 'none'`];
    }
    if (tc.type === 'tool' && typeof tc.name !== 'string') return [400, 'tool_choice.tool.name: Field required'];
    if (tc.type !== 'none' && (!Array.isArray(body.tools) || !body.tools.length)) {
      return [400, 'tool_choice may only be specified while providing tools.'];
    }
  }
  return null;
}

// The content blocks, stop reason and stop sequence of the answer to this request.
function buildAnswer(body, b) {
  const content = [];
  if (b.thinking || body.thinking?.type === 'enabled') {
    const thinking = typeof b.thinking === 'string' ? b.thinking : `The user asks: ${lastUserText(body)}. I will answer briefly.`;
    const signature = crypto.createHash('sha256').update(thinking).digest('base64');
    content.push({ type: 'thinking', thinking, signature });
  }
  const tools = Array.isArray(body.tools) ? body.tools.filter((t) => t && typeof t.name === 'string') : [];
  const tc = body.tool_choice;
  const wantsTool =
    tools.length > 0 &&
    tc?.type !== 'none' &&
    (b.tool || tc?.type === 'any' || tc?.type === 'tool' || /use the tool/i.test(lastUserText(body)));
  if (wantsTool) {
    const name = (typeof b.tool === 'object' && b.tool.name) || (tc?.type === 'tool' ? tc.name : tools[0].name);
    const def = tools.find((t) => t.name === name);
    const input = typeof b.tool === 'object' && b.tool.input ? b.tool.input : sampleFromSchema(def?.input_schema);
    if (b.toolText) content.push({ type: 'text', text: b.toolText });
    content.push({ type: 'tool_use', id: nextId('toolu_fake'), name, input });
    return { content, stopReason: 'tool_use', stopSequence: null };
  }
  const images = imageCount(body);
  let text = b.text !== undefined ? b.text : `reply to: ${lastUserText(body)}${images ? ` (images: ${images})` : ''}`;
  let stopReason = 'end_turn';
  let stopSequence = null;
  let cutAt = -1;
  for (const s of Array.isArray(body.stop_sequences) ? body.stop_sequences : []) {
    const at = s ? text.indexOf(s) : -1;
    if (at >= 0 && (cutAt < 0 || at < cutAt)) {
      cutAt = at;
      stopSequence = s;
    }
  }
  if (cutAt >= 0) {
    text = text.slice(0, cutAt);
    stopReason = 'stop_sequence';
  }
  const budget = body.max_tokens - anthropicOutputTokens(content);
  if (wordCount(text) > budget) {
    const words = splitText(text).filter((p) => /\S/.test(p));
    text = words.slice(0, Math.max(0, budget)).join('');
    stopReason = 'max_tokens';
    stopSequence = null;
  }
  content.push({ type: 'text', text });
  return { content, stopReason, stopSequence };
}

// The SSE events (as [name, data]) for a message, in the order api.anthropic.com sends them.
function streamEvents(message, b) {
  const events = [];
  const { content } = message;
  events.push([
    'message_start',
    {
      type: 'message_start',
      message: {
        ...message,
        content: [],
        stop_reason: null,
        stop_sequence: null,
        usage: { ...message.usage, output_tokens: 1 },
      },
    },
  ]);
  content.forEach((block, index) => {
    let start;
    const deltas = [];
    if (block.type === 'text') {
      start = { type: 'text', text: '' };
      for (const piece of splitText(block.text, b.chunks)) deltas.push({ type: 'text_delta', text: piece });
    } else if (block.type === 'tool_use') {
      start = { type: 'tool_use', id: block.id, name: block.name, input: {} };
      const json = JSON.stringify(block.input);
      deltas.push({ type: 'input_json_delta', partial_json: '' });
      for (const piece of splitEvenly(json, Math.min(4, json.length))) deltas.push({ type: 'input_json_delta', partial_json: piece });
    } else if (block.type === 'thinking') {
      start = { type: 'thinking', thinking: '' };
      for (const piece of splitText(block.thinking)) deltas.push({ type: 'thinking_delta', thinking: piece });
      deltas.push({ type: 'signature_delta', signature: block.signature });
    }
    events.push(['content_block_start', { type: 'content_block_start', index, content_block: start }]);
    if (index === 0) events.push(['ping', { type: 'ping' }]);
    for (const delta of deltas) events.push(['content_block_delta', { type: 'content_block_delta', index, delta }]);
    events.push(['content_block_stop', { type: 'content_block_stop', index }]);
  });
  events.push([
    'message_delta',
    {
      type: 'message_delta',
      delta: { stop_reason: message.stop_reason, stop_sequence: message.stop_sequence },
      usage: { output_tokens: message.usage.output_tokens },
    },
  ]);
  events.push(['message_stop', { type: 'message_stop' }]);
  return events;
}

export async function startFakeAnthropic(options = {}) {
  const models = options.models || ['claude-sonnet-4-5', 'claude-haiku-4-5'];

  async function handle(req, res, rec, b) {
    if (b.destroy) return cutConnection(req, { wait: false });
    if (b.hang) return; // the client (or close()) ends it
    if (b.delayMs) {
      await sleep(b.delayMs);
      if (res.destroyed) return;
    }
    const common = { 'request-id': nextId('req_fake') };
    const fail = (status, message, extra = {}) => sendJSON(res, rec, status, anthropicErrorBody(status, message), { ...common, ...extra });

    const status = b.error ? NAMED_ERRORS[b.error] : b.status;
    if (b.error && !status) throw new Error(`fake Anthropic: unknown error behaviour ${b.error}`);
    if (status !== undefined && status !== 200) {
      const extra = { ...(b.retryAfter !== undefined ? { 'retry-after': String(b.retryAfter) } : {}), ...(b.headers || {}) };
      if (b.body !== undefined) sendVerbatim(res, rec, status, b.body, { ...common, ...extra });
      else fail(status, undefined, extra);
      return;
    }

    const url = new URL(req.url, 'http://x');
    const isMessages = req.method === 'POST' && url.pathname === '/v1/messages';
    const isCount = req.method === 'POST' && url.pathname === '/v1/messages/count_tokens';
    const isModels = req.method === 'GET' && url.pathname === '/v1/models';
    if (!isMessages && !isCount && !isModels) return fail(404, `${req.method} ${url.pathname}: not found`);
    if (options.apiKey !== undefined) {
      const auth = /^Bearer (.*)$/i.exec(req.headers.authorization || '');
      const mode = options.auth || 'either';
      const key = mode === 'bearer' ? auth?.[1] : mode === 'x-api-key' ? req.headers['x-api-key'] : (req.headers['x-api-key'] ?? auth?.[1]);
      if (key === undefined) return fail(401, mode === 'bearer' ? 'authorization header is required' : 'x-api-key header is required');
      if (key !== options.apiKey) return fail(401, 'invalid x-api-key');
    }
    if (!req.headers['anthropic-version']) return fail(400, 'anthropic-version: header is required');
    if (b.body !== undefined) return sendVerbatim(res, rec, 200, b.body, { ...common, ...(b.headers || {}) });

    if (isModels) {
      const data = models.map((id) => ({ type: 'model', id, display_name: id, created_at: '2025-09-29T00:00:00Z' }));
      return sendJSON(res, rec, 200, { data, has_more: false, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null }, common);
    }
    if (isCount) {
      const problem = validate({ max_tokens: 1, ...rec.body, stream: undefined }, { ...options, allowExtraFields: true });
      if (problem) return fail(...problem);
      return sendJSON(res, rec, 200, { input_tokens: anthropicInputTokens(rec.body) }, common);
    }

    const problem = validate(rec.body, options);
    if (problem) return fail(...problem);
    const body = rec.body;
    const { content, stopReason, stopSequence } = buildAnswer(body, b);
    const usage = {
      input_tokens: anthropicInputTokens(body),
      cache_creation_input_tokens: 0,
      cache_read_input_tokens: 0,
      output_tokens: anthropicOutputTokens(content),
      service_tier: 'standard',
    };
    const message = {
      id: nextId('msg_fake'),
      type: 'message',
      role: 'assistant',
      model: body.model,
      content,
      stop_reason: stopReason,
      stop_sequence: stopSequence,
      usage,
    };
    rec.responseText = content
      .filter((c) => c.type === 'text')
      .map((c) => c.text)
      .join('');
    rec.responseUsage = usage;

    if (body.stream !== true) {
      if (b.cutBody) {
        const payload = Buffer.from(JSON.stringify(message));
        rec.responseStatus = 200;
        res.writeHead(200, { ...common, 'content-type': 'application/json', 'content-length': payload.length, ...(b.headers || {}) });
        res.flushHeaders();
        if (b.cutBody === 'half') await writePiece(res, payload.subarray(0, Math.floor(payload.length / 2)));
        return cutConnection(req);
      }
      return sendJSON(res, rec, 200, message, { ...common, ...(b.headers || {}) });
    }

    const events = streamEvents(message, b);
    rec.responseStatus = 200;
    rec.responseEvents = events;
    res.writeHead(200, {
      ...common,
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      ...(b.headers || {}),
    });
    res.flushHeaders();
    for (const [name, data] of events) {
      if (res.destroyed) return;
      const n = rec.sentEvents;
      if (b.cutAfterEvents !== undefined && n >= b.cutAfterEvents) return cutConnection(req);
      if (b.stallAfterEvents !== undefined && n >= b.stallAfterEvents) return; // until the peer closes
      if (b.errorEventAfter !== undefined && n >= b.errorEventAfter) {
        const err = { type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } };
        await writePiece(res, `event: error\ndata: ${JSON.stringify(err)}\n\n`);
        if (!res.destroyed) res.end(() => (rec.finished = true));
        return;
      }
      await writePiece(res, `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`);
      rec.sentEvents++;
      if (b.chunkDelayMs) await sleep(b.chunkDelayMs);
    }
    if (!res.destroyed) res.end(() => (rec.finished = true));
  }

  const srv = await startRecordingServer({ handle, default: options.default });
  return {
    ...srv,
    baseURL: srv.url,
    next(...behaviours) {
      srv.next(...behaviours);
      return this;
    },
    setDefault(behaviour) {
      srv.setDefault(behaviour);
      return this;
    },
    reset() {
      srv.reset();
      return this;
    },
    /** POST /v1/messages requests only (what most assertions look at). */
    messageRequests() {
      return srv.requests.filter((r) => r.method === 'POST' && r.path.split('?')[0] === '/v1/messages');
    },
    chatRequests() {
      return this.messageRequests();
    },
  };
}
