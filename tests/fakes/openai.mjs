// openai.mjs — a fake OpenAI API server for integration tests: speaks the Chat Completions wire
// format (JSON and SSE) as api.openai.com sends it, records every request, and can be told per
// request to fail, stall, cut a stream or drop the connection.
//
//   const fake = await startFakeOpenAI();          // listens on 127.0.0.1, a free port
//   fake.baseURL                                   // "http://127.0.0.1:PORT/v1"
//   fake.next({ status: 500 })                     // the next request gets this behaviour
//   fake.setDefault({ text: 'hi' })                // every request without a queued behaviour
//   fake.requests                                  // [{method, path, headers, body, raw, ...}]
//                                                  // each with receivedAt: performance.now()
//                                                  // (ms, monotonic) when its body had arrived
//   fake.chatRequests(), fake.embeddingRequests()  // those two kinds of request only
//   await fake.close()
//   startFakeOpenAI({ tls: {key, cert, ca, requestCert, ...} })  // HTTPS (node tls options);
//                                                  // url/baseURL then start with https://
//
// Routes: GET /v1/models, POST /v1/chat/completions, POST /v1/embeddings (input a string or a list
// of strings; vectors from fakeEmbedding(text, dimensions || 8), sent as base64 float32 when
// encoding_format is base64, as the openai SDK asks by default). With options.apiKey the
// Authorization header must be `Bearer <apiKey>` (401 otherwise).
//
// Azure OpenAI: startFakeOpenAI({ azure: { deployment, apiVersion }, apiKey }) serves instead
//   POST /openai/deployments/{deployment}/chat/completions?api-version=...  and  .../embeddings
// (deployment: a name or a list of names; apiVersion: the accepted version(s), or absent for any)
// as {resource}.openai.azure.com does: the api-key header is required (401 without it, or when it
// differs from apiKey), the api-version query is required (404 Resource not found without it, 400
// when not an accepted one), an unknown deployment is 404 DeploymentNotFound — errors in Azure's
// form {"error":{"code","message"}}. Answers are OpenAI's plus Azure's content filter results
// (prompt_filter_results; a stream starts with a chunk whose choices are empty and which carries
// them); model is the request's model or else the deployment name. fake.url is the endpoint
// (what AzureOpenAI takes as `endpoint`), fake.baseURL is `${url}/openai`. Each request records
// its `deployment` and `apiVersion`.
//
// Behaviour fields (all optional):
//   status, body, headers   answer with this status/body (object → JSON, string → as is);
//                           a status >= 400 without body gets OpenAI's error JSON for it
//   delayMs                 wait before sending the response head
//   chunkDelayMs            wait between SSE events
//   cutAfterChunks: N       stream: send N content events, then destroy the socket
//   destroy: true           destroy the socket as soon as the request arrived
//   hang: true              never answer (until the client goes away)
//   text                    answer text (default: `reply to: <last user message>`)
//   chunks: N               stream the text in N content events (default: one per word)
//   raw: {contentType, body}  answer 200 with exactly these bytes and this Content-Type (an HTML
//                           page, an event stream to a non-stream request, JSON to a stream...)
//   bigBytes: N             non-stream: a valid chat.completion whose content is N bytes of 'x',
//                           written in 64 KiB pieces (with Content-Length unless noLength: true)
//   bigEvent: N             stream: after the role chunk, one `data:` event of N bytes with no
//                           blank line, written in 64 KiB pieces, then the connection ends
//   streamBytes: N          stream: content events of 16 KiB each until N bytes were sent, then
//                           the usual end
//   toolDeltas: [[...], ...]  stream: one event per entry, its delta.tool_calls the given array,
//                           then finish_reason tool_calls and [DONE]
//   omitUsage: true         stream: no usage chunk even when stream_options.include_usage asks
//   tool: true | {name, arguments}  answer with one tool call (even without "use the tool"; the
//                           default: when the request has function tools and the last user text
//                           contains "use the tool", or tool_choice is required / a function):
//                           {id "call_fake…", type function, function {name (tool_choice's, else the
//                           first tool's), arguments (JSON text, from the parameters schema)}},
//                           content null, finish_reason tool_calls; completion_tokens =
//                           fakeTokens(arguments). Streamed: the id and name first, the arguments
//                           in 3 pieces, finish_reason tool_calls, the usage chunk when asked.
//   sseBytes: '...'         stream: exactly these bytes as the body (text/event-stream), written
//                           one byte per write (every split an SSE parser can meet); with
//                           sseHang: true the response is then left open (never ended)
//   Requests that were answered with a big body record `bigSent` (bytes written).
// Faults (tests/integration/faults-*.test.mjs):
//   rst: true               every cut below (and destroy) resets the connection (TCP RST, via
//                           socket.resetAndDestroy) instead of closing it (FIN)
//   cutBody: 'head'         send the response head (200, full Content-Length for JSON, SSE head
//                           for streams), then cut: no body byte at all
//   cutBody: 'half'         non-stream: head and the first half of the JSON body, then cut
//   cutBody: 'utf8'         non-stream: head and the body up to the middle of its first
//                           multi-byte UTF-8 character (the text must contain one), then cut
//   cutInside: 'event'      with cutAfterChunks: the first half of the next content event goes
//                           out before the cut (the cut falls inside an SSE event)
//   cutInside: 'utf8'       with cutAfterChunks: the next content event up to the middle of its
//                           first multi-byte UTF-8 character, then the cut
//   stallAfterChunks: N     stream: send N content events, then send nothing more (the socket
//                           stays open until the peer closes it)
//   stallBody: true         non-stream: head and half of the body, then nothing more
//   endAfterChunks: N       stream: send N content events, then end the response cleanly (the
//                           chunked body is terminated) without finish_reason nor [DONE]
//   holdAfterChunks: N, hold: Promise   stream: send N content events, wait until the promise
//                           settles, then send the rest (the test decides when the answer ends)
import http from 'node:http';
import https from 'node:https';

import { fakeEmbedding, sampleFromSchema } from './server.mjs';

export { fakeEmbedding };

let idCounter = 0;

// The deterministic token count this fake reports: one token per started 4 bytes of text.
export function fakeTokens(text) {
  return Math.ceil(Buffer.byteLength(String(text ?? ''), 'utf8') / 4);
}

function contentText(content) {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content
      .filter((p) => p && p.type === 'text' && typeof p.text === 'string')
      .map((p) => p.text)
      .join('');
  }
  return '';
}

export function lastUserText(body) {
  const msgs = Array.isArray(body?.messages) ? body.messages : [];
  for (let i = msgs.length - 1; i >= 0; i--) {
    if (msgs[i] && msgs[i].role === 'user') return contentText(msgs[i].content);
  }
  return '';
}

// The tool call this fake answers with, or null: see the `tool` behaviour field.
function toolCallFor(body, b) {
  const tools = Array.isArray(body?.tools) ? body.tools.filter((t) => t && t.type === 'function' && t.function) : [];
  const choice = body?.tool_choice;
  const forced = choice === 'required' || (choice && typeof choice === 'object' && choice.type === 'function');
  if (!b.tool && !(tools.length && choice !== 'none' && (forced || lastUserText(body).includes('use the tool')))) return null;
  const named = choice && typeof choice === 'object' && choice.function ? choice.function.name : undefined;
  const fn = tools.find((t) => t.function.name === (b.tool?.name ?? named)) || tools[0];
  const name = b.tool?.name ?? fn?.function.name ?? 'tool';
  const args = b.tool?.arguments ?? sampleFromSchema(fn?.function.parameters);
  return { id: `call_fake${++idCounter}`, type: 'function', function: { name, arguments: JSON.stringify(args) } };
}

function promptTokens(body) {
  const msgs = Array.isArray(body?.messages) ? body.messages : [];
  return msgs.reduce((n, m) => n + fakeTokens(contentText(m?.content)), 0);
}

// Splits text into n roughly equal pieces (n >= 1); by default one piece per word (keeping the
// separating spaces), so that joining the pieces gives the text back exactly.
function splitText(text, n) {
  if (!n) {
    const parts = text.match(/\s*\S+|\s+$/g);
    return parts && parts.length ? parts : [text];
  }
  const out = [];
  const size = Math.ceil(text.length / n) || 1;
  for (let i = 0; i < n; i++) out.push(text.slice(i * size, (i + 1) * size));
  return out;
}

const ERROR_DEFAULTS = {
  400: { type: 'invalid_request_error', code: null, message: 'Bad request.' },
  401: {
    type: 'invalid_request_error',
    code: 'invalid_api_key',
    message: 'Incorrect API key provided.',
  },
  403: { type: 'invalid_request_error', code: 'unsupported_country_region_territory', message: 'Forbidden.' },
  404: { type: 'invalid_request_error', code: 'model_not_found', message: 'The model does not exist.' },
  429: {
    type: 'requests',
    code: 'rate_limit_exceeded',
    message: 'Rate limit reached for requests. Please try again in 1s.',
  },
  500: {
    type: 'server_error',
    code: null,
    message: 'The server had an error while processing your request. Sorry about that!',
  },
  503: { type: 'server_error', code: null, message: 'The engine is currently overloaded.' },
};

export function openaiErrorBody(status, message) {
  const d = ERROR_DEFAULTS[status] || { type: 'server_error', code: null, message: `HTTP ${status}` };
  return { error: { message: message ?? d.message, type: d.type, param: null, code: d.code } };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Azure's content filter verdict on a harmless text (prompt_filter_results, content_filter_results).
const AZURE_FILTER = {
  hate: { filtered: false, severity: 'safe' },
  self_harm: { filtered: false, severity: 'safe' },
  sexual: { filtered: false, severity: 'safe' },
  violence: { filtered: false, severity: 'safe' },
};

// The offset just after the lead byte of buf's first multi-byte UTF-8 character: cutting there
// leaves a truncated sequence. Throws when there is none (the test's text must contain one).
function utf8Middle(buf) {
  for (let i = 0; i < buf.length; i++) if (buf[i] >= 0xc0) return i + 1;
  throw new Error('fake OpenAI: cut inside a UTF-8 sequence needs a text with a multi-byte character');
}

export async function startFakeOpenAI(options = {}) {
  const queue = [];
  let defaultBehaviour = { ...(options.default || {}) };
  const requests = [];
  const waiters = [];
  const sockets = new Set();

  function notify() {
    for (let i = waiters.length - 1; i >= 0; i--) {
      if (requests.length >= waiters[i].n) {
        waiters[i].resolve();
        waiters.splice(i, 1);
      }
    }
  }

  const createServer = options.tls ? (fn) => https.createServer(options.tls, fn) : http.createServer;
  const server = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      let body = null;
      try {
        body = raw ? JSON.parse(raw) : null;
      } catch {
        body = undefined; // not JSON
      }
      const rec = {
        receivedAt: performance.now(),
        method: req.method,
        path: req.url,
        headers: { ...req.headers },
        raw,
        body,
        behaviour: null,
        responseStatus: null,
        responseText: null,
        responseUsage: null,
        responseBody: null, // the JSON object sent (non-stream answers)
        sentChunks: 0,
        finished: false, // the whole response was written
        clientClosedEarly: false, // the peer closed before the response was complete
      };
      let closedResolve;
      rec.closed = new Promise((r) => (closedResolve = r));
      res.on('close', () => {
        if (!rec.finished) rec.clientClosedEarly = true;
        closedResolve(rec);
      });
      requests.push(rec);
      notify();
      const behaviour = queue.length ? queue.shift() : defaultBehaviour;
      rec.behaviour = behaviour;
      handle(req, res, rec, behaviour).catch((err) => {
        if (!res.headersSent) {
          res.writeHead(500, { 'content-type': 'text/plain' });
        }
        res.end(String(err && err.stack));
      });
    });
  });
  server.keepAliveTimeout = 5000;
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });

  async function handle(req, res, rec, b) {
    // the cut: FIN (destroy) or, with b.rst, RST; what was written goes out first
    const cut = async (wait = true) => {
      if (wait) await sleep(50);
      if (b.rst && typeof req.socket.resetAndDestroy === 'function') req.socket.resetAndDestroy();
      else req.socket.destroy();
    };
    const writeRaw = (data) => new Promise((resolve) => res.write(data, () => resolve()));
    if (b.destroy) {
      await cut(false);
      return;
    }
    if (b.hang) return; // the client (or close()) ends it
    if (b.delayMs) {
      await sleep(b.delayMs);
      if (res.destroyed || res.writableEnded) return;
    }
    const url = new URL(req.url, 'http://x');
    const common = {
      'x-request-id': `req_fake_${++idCounter}`,
      'openai-processing-ms': '1',
      'openai-version': '2020-10-01',
    };
    // the OpenAI route this request is for ('/v1/chat/completions', ...); Azure paths map onto them
    let route = url.pathname;

    if (b.status !== undefined && b.status !== 200) {
      const body = b.body !== undefined ? b.body : openaiErrorBody(b.status);
      const isText = typeof body === 'string';
      const payload = isText ? body : JSON.stringify(body);
      rec.responseStatus = b.status;
      res.writeHead(b.status, {
        ...common,
        'content-type': isText ? 'text/plain; charset=utf-8' : 'application/json',
        'content-length': Buffer.byteLength(payload),
        ...(b.headers || {}),
      });
      res.end(payload, () => (rec.finished = true));
      return;
    }

    if (options.azure) {
      const az = azureRoute(req, url);
      if (az.status) {
        sendJSON(res, rec, az.status, { error: { code: az.code, message: az.message } }, common);
        return;
      }
      route = az.route;
      rec.deployment = az.deployment;
      rec.apiVersion = az.apiVersion;
    }

    if (req.method === 'GET' && route === '/v1/models') {
      const body = b.body || {
        object: 'list',
        data: (options.models || ['gpt-4o-mini', 'gpt-4o']).map((id) => ({
          id,
          object: 'model',
          created: 1715367049,
          owned_by: 'system',
        })),
      };
      sendJSON(res, rec, 200, body, common, b.headers);
      return;
    }

    const isEmbeddings = req.method === 'POST' && route === '/v1/embeddings';
    if (!isEmbeddings && (req.method !== 'POST' || route !== '/v1/chat/completions')) {
      sendJSON(
        res,
        rec,
        404,
        {
          error: {
            message: `Invalid URL (${req.method} ${url.pathname})`,
            type: 'invalid_request_error',
            param: null,
            code: null,
          },
        },
        common
      );
      return;
    }
    if (rec.body === undefined || rec.body === null || typeof rec.body !== 'object') {
      sendJSON(res, rec, 400, openaiErrorBody(400, 'We could not parse the JSON body of your request.'), common);
      return;
    }
    if (!options.azure && options.apiKey && req.headers.authorization !== `Bearer ${options.apiKey}`) {
      sendJSON(res, rec, 401, openaiErrorBody(401), common);
      return;
    }
    if (b.body !== undefined) {
      sendJSON(res, rec, 200, b.body, common, b.headers);
      return;
    }
    if (b.raw) {
      rec.responseStatus = 200;
      res.writeHead(200, { ...common, 'content-type': b.raw.contentType, 'content-length': Buffer.byteLength(b.raw.body) });
      res.end(b.raw.body, () => (rec.finished = true));
      return;
    }

    const body = rec.body;
    const model = typeof body.model === 'string' ? body.model : rec.deployment || 'unknown';
    if (isEmbeddings) {
      sendEmbeddings(res, rec, body, model, common, b.headers);
      return;
    }
    const text = b.text !== undefined ? b.text : `reply to: ${lastUserText(body)}`;
    const id = `chatcmpl-fake${++idCounter}`;
    const created = Math.floor(Date.now() / 1000);
    const pt = promptTokens(body);
    const toolCall = toolCallFor(body, b);
    const ct = fakeTokens(toolCall ? toolCall.function.arguments : text);
    const usage = {
      prompt_tokens: pt,
      completion_tokens: ct,
      total_tokens: pt + ct,
      prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
      completion_tokens_details: {
        reasoning_tokens: 0,
        audio_tokens: 0,
        accepted_prediction_tokens: 0,
        rejected_prediction_tokens: 0,
      },
    };
    rec.responseText = toolCall ? null : text;
    rec.responseToolCall = toolCall;
    rec.responseUsage = usage;

    if (body.stream !== true && b.bigBytes) {
      const head = Buffer.from(
        `{"id":"${id}","object":"chat.completion","created":${created},"model":${JSON.stringify(model)},` +
          '"choices":[{"index":0,"message":{"role":"assistant","content":"'
      );
      const tail = Buffer.from(
        `"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":${pt},"completion_tokens":${b.bigBytes},"total_tokens":${pt + b.bigBytes}}}`
      );
      rec.responseStatus = 200;
      rec.responseUsage = { prompt_tokens: pt, completion_tokens: b.bigBytes };
      res.writeHead(200, {
        ...common,
        'content-type': 'application/json',
        ...(b.noLength ? {} : { 'content-length': head.length + b.bigBytes + tail.length }),
      });
      rec.bigSent = 0;
      await writeAll(res, rec, head);
      const piece = Buffer.alloc(64 * 1024, 'x');
      for (let left = b.bigBytes; left > 0 && !res.destroyed; left -= piece.length) {
        await writeAll(res, rec, left >= piece.length ? piece : piece.subarray(0, left));
      }
      if (res.destroyed) return;
      rec.bigSent += tail.length;
      res.end(tail, () => (rec.finished = true));
      return;
    }

    if (body.stream !== true) {
      const answer = {
        id,
        object: 'chat.completion',
        created,
        model,
        choices: [
          {
            index: 0,
            message: toolCall
              ? { role: 'assistant', content: null, tool_calls: [toolCall], refusal: null, annotations: [] }
              : { role: 'assistant', content: text, refusal: null, annotations: [] },
            logprobs: null,
            finish_reason: toolCall ? 'tool_calls' : 'stop',
            ...(options.azure ? { content_filter_results: AZURE_FILTER } : {}),
          },
        ],
        usage,
        service_tier: 'default',
        system_fingerprint: 'fp_fake0001',
        ...(options.azure ? { prompt_filter_results: [{ prompt_index: 0, content_filter_results: AZURE_FILTER }] } : {}),
      };
      if (b.cutBody || b.stallBody) {
        const payload = Buffer.from(JSON.stringify(answer));
        let upTo = Math.floor(payload.length / 2);
        if (b.cutBody === 'head') upTo = 0;
        if (b.cutBody === 'utf8') upTo = utf8Middle(payload);
        rec.responseStatus = 200;
        res.writeHead(200, { ...common, 'content-type': 'application/json', 'content-length': payload.length, ...(b.headers || {}) });
        res.flushHeaders();
        if (upTo > 0) await writeRaw(payload.subarray(0, upTo));
        rec.sentBytes = upTo;
        if (b.stallBody) return; // until the peer closes
        await cut();
        return;
      }
      sendJSON(res, rec, 200, answer, common, b.headers);
      return;
    }

    // Streamed: the events api.openai.com sends, in its order.
    const includeUsage = body.stream_options && body.stream_options.include_usage === true;
    const base = { id, object: 'chat.completion.chunk', created, model, service_tier: 'default', system_fingerprint: 'fp_fake0001' };
    const withUsage = (o) => (includeUsage ? { ...o, usage: null } : o);
    const events = [];
    events.push(
      withUsage({
        ...base,
        choices: [{ index: 0, delta: { role: 'assistant', content: '', refusal: null }, logprobs: null, finish_reason: null }],
      })
    );
    for (const piece of splitText(text, b.chunks)) {
      events.push(withUsage({ ...base, choices: [{ index: 0, delta: { content: piece }, logprobs: null, finish_reason: null }] }));
    }
    events.push(withUsage({ ...base, choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: 'stop' }] }));
    if (includeUsage && !b.omitUsage) events.push({ ...base, choices: [], usage });
    if (toolCall && !b.toolDeltas) {
      const a = toolCall.function.arguments;
      const third = Math.ceil(a.length / 3);
      const tail = events.slice(-1)[0].usage && !events.slice(-1)[0].choices.length ? events.pop() : null;
      events.splice(1, events.length - 1);
      events.push(
        withUsage({
          ...base,
          choices: [{ index: 0, delta: { tool_calls: [{ index: 0, id: toolCall.id, type: 'function', function: { name: toolCall.function.name, arguments: '' } }] }, logprobs: null, finish_reason: null }],
        })
      );
      for (let i = 0; i < 3; i++) {
        const piece = a.slice(i * third, (i + 1) * third);
        if (piece) events.push(withUsage({ ...base, choices: [{ index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: piece } }] }, logprobs: null, finish_reason: null }] }));
      }
      events.push(withUsage({ ...base, choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: 'tool_calls' }] }));
      if (tail) events.push(tail);
    }
    if (b.toolDeltas) {
      events.splice(1, events.length - 1);
      for (const tcs of b.toolDeltas) {
        events.push(withUsage({ ...base, choices: [{ index: 0, delta: { tool_calls: tcs }, logprobs: null, finish_reason: null }] }));
      }
      events.push(withUsage({ ...base, choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: 'tool_calls' }] }));
    }
    // Azure: the stream opens with the prompt's content filter results, in a chunk without choices
    const firstContent = options.azure ? 2 : 1;
    if (options.azure) {
      events.unshift({ choices: [], created: 0, id: '', model: '', object: '', prompt_filter_results: [{ prompt_index: 0, content_filter_results: AZURE_FILTER }] });
    }

    rec.responseStatus = 200;
    res.writeHead(200, {
      ...common,
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      ...(b.headers || {}),
    });
    res.flushHeaders();
    if (b.sseBytes !== undefined) {
      const bytes = Buffer.from(b.sseBytes);
      for (let i = 0; i < bytes.length && !res.destroyed; i++) {
        await new Promise((resolve) => res.write(bytes.subarray(i, i + 1), () => resolve()));
      }
      if (b.sseHang) return; // the client (or close()) ends it
      if (!res.destroyed) res.end(() => (rec.finished = true));
      return;
    }
    if (b.bigEvent || b.streamBytes) {
      rec.bigSent = 0;
      await writeAll(res, rec, `data: ${JSON.stringify(events[0])}\n\n`);
      if (b.bigEvent) {
        await writeAll(res, rec, 'data: {"choices":[{"index":0,"delta":{"content":"');
        const piece = Buffer.alloc(64 * 1024, 'y');
        for (let left = b.bigEvent; left > 0 && !res.destroyed; left -= piece.length) {
          await writeAll(res, rec, left >= piece.length ? piece : piece.subarray(0, left));
        }
      } else {
        const ev = `data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta: { content: 'z'.repeat(16 * 1024) }, finish_reason: null }] })}\n\n`;
        while (rec.bigSent < b.streamBytes && !res.destroyed) await writeAll(res, rec, ev);
        for (const e of events.slice(-2)) if (!res.destroyed) await writeAll(res, rec, `data: ${JSON.stringify(e)}\n\n`);
        if (!res.destroyed) await writeAll(res, rec, 'data: [DONE]\n\n');
      }
      if (!res.destroyed) res.end(() => (rec.finished = true));
      return;
    }
    if (b.cutBody === 'head') {
      await cut();
      return;
    }
    let contentSent = 0;
    for (let i = 0; i < events.length; i++) {
      if (res.destroyed) return;
      const isContent = i >= firstContent && events[i].choices.length && events[i].choices[0].delta.content !== undefined;
      if (b.stallAfterChunks !== undefined && isContent && contentSent >= b.stallAfterChunks) return; // until the peer closes
      if (b.endAfterChunks !== undefined && isContent && contentSent >= b.endAfterChunks) {
        res.end(() => (rec.finished = true));
        return;
      }
      if (b.hold && isContent && contentSent === b.holdAfterChunks && !rec.held) {
        rec.held = true;
        await Promise.resolve(b.hold).catch(() => {});
        if (res.destroyed) return;
      }
      if (b.cutAfterChunks !== undefined && isContent && contentSent >= b.cutAfterChunks) {
        if (b.cutInside) {
          const ev = Buffer.from(`data: ${JSON.stringify(events[i])}\n\n`);
          const upTo = b.cutInside === 'utf8' ? utf8Middle(ev) : Math.floor(ev.length / 2);
          // let the complete events arrive on their own first, then the partial one
          await sleep(50);
          await writeRaw(ev.subarray(0, upTo));
        }
        // let what was written reach the peer first: the cut is meant to come after it
        await cut();
        return;
      }
      await writeRaw(`data: ${JSON.stringify(events[i])}\n\n`);
      rec.sentChunks++;
      if (isContent) contentSent++;
      if (b.chunkDelayMs) await sleep(b.chunkDelayMs);
    }
    if (res.destroyed) return;
    res.end('data: [DONE]\n\n', () => (rec.finished = true));
  }

  // Writes one piece and waits until it is handed to the socket (backpressure); a peer that
  // went away ends the wait.
  function writeAll(res, rec, piece) {
    if (res.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        res.off('close', done);
        resolve();
      };
      res.once('close', done);
      const ok = res.write(piece, () => {
        rec.bigSent += Buffer.byteLength(piece);
        if (ok) done();
      });
      if (!ok) res.once('drain', done);
    });
  }

  // Maps an Azure OpenAI request onto the OpenAI route it stands for, or says why Azure refuses it.
  function azureRoute(req, url) {
    const az = options.azure;
    const deployments = [].concat(az.deployment ?? []);
    const versions = az.apiVersion === undefined ? null : [].concat(az.apiVersion);
    const m = /^\/openai\/deployments\/([^/]+)\/(chat\/completions|embeddings)$/.exec(url.pathname);
    const apiVersion = url.searchParams.get('api-version');
    if (!m || !apiVersion) return { status: 404, code: '404', message: 'Resource not found' };
    const key = req.headers['api-key'];
    if (key === undefined || (options.apiKey !== undefined && key !== options.apiKey)) {
      return {
        status: 401,
        code: '401',
        message:
          'Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.',
      };
    }
    if (versions && !versions.includes(apiVersion)) return { status: 400, code: 'BadRequest', message: 'API version not supported' };
    const deployment = decodeURIComponent(m[1]);
    if (deployments.length && !deployments.includes(deployment)) {
      return {
        status: 404,
        code: 'DeploymentNotFound',
        message: 'The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.',
      };
    }
    return { route: `/v1/${m[2]}`, deployment, apiVersion };
  }

  function sendEmbeddings(res, rec, body, model, common, extra) {
    const inputs = typeof body.input === 'string' ? [body.input] : body.input;
    if (!Array.isArray(inputs) || !inputs.length || inputs.some((x) => typeof x !== 'string')) {
      sendJSON(res, rec, 400, openaiErrorBody(400, "'input' is a required property and must be a string or a non-empty list of strings"), common);
      return;
    }
    if (!options.azure && typeof body.model !== 'string') {
      sendJSON(res, rec, 400, openaiErrorBody(400, 'you must provide a model parameter'), common);
      return;
    }
    const dims = Number.isInteger(body.dimensions) && body.dimensions > 0 ? body.dimensions : 8;
    const base64 = body.encoding_format === 'base64';
    const data = inputs.map((text, index) => {
      const v = fakeEmbedding(text, dims);
      return { object: 'embedding', index, embedding: base64 ? Buffer.from(new Float32Array(v).buffer).toString('base64') : v };
    });
    const tokens = inputs.reduce((n, t) => n + fakeTokens(t), 0);
    rec.responseUsage = { prompt_tokens: tokens, total_tokens: tokens };
    sendJSON(res, rec, 200, { object: 'list', data, model, usage: rec.responseUsage }, common, extra);
  }

  function sendJSON(res, rec, status, obj, common, extra) {
    const payload = JSON.stringify(obj);
    rec.responseStatus = status;
    rec.responseBody = obj;
    res.writeHead(status, {
      ...common,
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(payload),
      ...(extra || {}),
    });
    res.end(payload, () => (rec.finished = true));
  }

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const port = server.address().port;
  const scheme = options.tls ? 'https' : 'http';

  return {
    port,
    url: `${scheme}://127.0.0.1:${port}`,
    baseURL: `${scheme}://127.0.0.1:${port}${options.azure ? '/openai' : '/v1'}`,
    requests,
    /** Queue a behaviour for the next request (consumed in order, one per request). */
    next(...behaviours) {
      queue.push(...behaviours);
      return this;
    },
    /** The behaviour of every request that finds the queue empty. */
    setDefault(behaviour) {
      defaultBehaviour = { ...(behaviour || {}) };
      return this;
    },
    /** Forget recorded requests and queued behaviours; the default goes back to plain answers. */
    reset() {
      requests.length = 0;
      queue.length = 0;
      defaultBehaviour = { ...(options.default || {}) };
      return this;
    },
    /** Chat-completion requests only (what most assertions look at). */
    chatRequests() {
      return requests.filter((r) => /^(\/v1|\/openai\/deployments\/[^/]+)\/chat\/completions(\?|$)/.test(r.path));
    },
    /** Embeddings requests only. */
    embeddingRequests() {
      return requests.filter((r) => /^(\/v1|\/openai\/deployments\/[^/]+)\/embeddings(\?|$)/.test(r.path));
    },
    /** Resolves once at least n requests have arrived. */
    waitForRequests(n) {
      if (requests.length >= n) return Promise.resolve();
      return new Promise((resolve) => waiters.push({ n, resolve }));
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(() => r()));
    },
  };
}
