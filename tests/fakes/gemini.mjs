// gemini.mjs — a fake Google Gemini API (generativelanguage.googleapis.com, v1beta) for integration
// tests: generateContent, streamGenerateContent (?alt=sse as Google sends it: `data: {...}\r\n\r\n`;
// without alt=sse a JSON array), embedContent, batchEmbedContents, countTokens and the model list;
// validates requests the way Google does for what an adapter can get wrong, records every request,
// and can be told per request to fail or to cut or stall a stream.
//
//   const fake = await startFakeGemini({ apiKey: 'g-fake' });   // 127.0.0.1, a free port
//   fake.baseURL                     // "http://127.0.0.1:PORT" (+ /v1beta/models/{model}:…)
//   fake.next({ status: 429 })       // the next request gets this behaviour
//   fake.setDefault({ text: 'hi' })  // every request without a queued behaviour
//   fake.requests                    // every request: {method, path, headers, body, raw,
//                                    // receivedAt, model, methodName ("generateContent", …),
//                                    // responseStatus, responseBody, responseText, responseUsage,
//                                    // sentEvents, finished, clientClosedEarly, closed}
//   fake.generateRequests()          // generateContent and streamGenerateContent requests
//   fake.embedRequests()             // embedContent and batchEmbedContents requests
//   fake.reset(); await fake.close()
//
// Options: apiKey (the key — x-goog-api-key header, or the ?key= query — must equal it: without
// one 403 PERMISSION_DENIED, a wrong one 400 INVALID_ARGUMENT API_KEY_INVALID; without the option
// any key is accepted), models (names for GET /v1beta/models), default (the default behaviour).
//
// Errors are Google's JSON {"error":{"code","message","status"}}. Checked, in this order: the route
// (404 NOT_FOUND), the key, a JSON body, no unknown field (top level, generationConfig, parts:
// 'Invalid JSON payload received. Unknown name "x"…'; camelCase and snake_case both accepted, as
// Google does), contents a non-empty list, roles "user" or "model" only (none = user), parts
// non-empty, inlineData with mimeType and data; for embeddings a non-empty requests list whose
// every model is models/{the URL's model} and has content.
//
// The default answer: candidates[0].content {role "model", parts [{text "reply to: <last user text>"}]}
// (the text parts of the last user content, or when none the JSON of its functionResponse
// responses), followed by " (images: N)" when the request has N image parts (inlineData/fileData
// with an image/* mimeType); finishReason STOP; usageMetadata {promptTokenCount (words of
// systemInstruction and of all parts: geminiPromptTokens(body)), candidatesTokenCount (words of the
// answer), totalTokenCount, promptTokensDetails}; modelVersion, responseId. stopSequences cut the
// text (STOP), generationConfig.maxOutputTokens truncates it to that many words (MAX_TOKENS). With
// function declarations and "use the tool" in the last user text (or functionCallingConfig mode
// ANY, or the behaviour's `tool`), the part is {functionCall {name, args}} (the first allowed or
// declared function; args from its parameters schema), finishReason STOP. Streamed: one chunk per
// piece of text, the last one with finishReason and usageMetadata (a functionCall comes whole in
// one chunk). Embeddings: geminiEmbedding(text, dims) — dims = outputDimensionality or 8, values
// in [-1, 1] from a SHA-256 of the text, so equal texts get equal vectors.
//
// Behaviour fields (all optional):
//   status, headers, body  answer with this status/body verbatim (object → JSON, string → text);
//                          a status >= 400 without body gets Google's error JSON for it:
//                          400 INVALID_ARGUMENT, 403 PERMISSION_DENIED, 404 NOT_FOUND,
//                          429 RESOURCE_EXHAUSTED, 500 INTERNAL, 503 UNAVAILABLE, 504 DEADLINE_EXCEEDED
//   retryDelay: '17s'      with a 429: a google.rpc.RetryInfo detail with this retryDelay
//   delayMs                wait before the response head
//   chunkDelayMs           stream: wait between chunks
//   text                   the answer text (instead of "reply to: …")
//   chunks: N              stream: the text in N chunks (default: one per word)
//   tool: true | {name, args}   answer with a functionCall part (even without "use the tool")
//   cutAfterEvents: N      stream: send N chunks, then destroy the socket
//   stallAfterEvents: N    stream: send N chunks, then nothing (until the peer closes)
//   usageEveryChunk: true  stream: usageMetadata on every chunk (prompt and total; candidates
//                          counted so far), as some Gemini models send it
//   destroy: true          destroy the socket as soon as the request arrived
//   hang: true             never answer (until the client goes away)
import crypto from 'node:crypto';

import {
  cutConnection,
  fakeEmbedding,
  sendJSON,
  sendVerbatim,
  sleep,
  splitText,
  startRecordingServer,
  sampleFromSchema,
  wordCount,
  writePiece,
} from './server.mjs';

const STATUS_NAMES = {
  400: ['INVALID_ARGUMENT', 'Request contains an invalid argument.'],
  401: ['UNAUTHENTICATED', 'Request had invalid authentication credentials.'],
  403: ['PERMISSION_DENIED', 'The caller does not have permission'],
  404: ['NOT_FOUND', 'Requested entity was not found.'],
  429: ['RESOURCE_EXHAUSTED', 'Resource has been exhausted (e.g. check quota).'],
  500: ['INTERNAL', 'An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting'],
  503: ['UNAVAILABLE', 'The model is overloaded. Please try again later.'],
  504: ['DEADLINE_EXCEEDED', 'The request timed out. Please try again.'],
};

/** Google's error JSON for an HTTP status (message: the given one or Google's usual). */
export function geminiErrorBody(status, message, details) {
  const [name, msg] = STATUS_NAMES[status] || [status >= 500 ? 'INTERNAL' : 'INVALID_ARGUMENT', `HTTP ${status}`];
  return { error: { code: status, message: message ?? msg, status: name, ...(details ? { details } : {}) } };
}

const camel = (k) => k.replace(/_([a-z])/g, (_, c) => c.toUpperCase());
const get = (o, k) => (o ? (o[k] ?? o[k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)]) : undefined);

const REQUEST_FIELDS = new Set(['contents', 'tools', 'toolConfig', 'safetySettings', 'systemInstruction', 'generationConfig', 'cachedContent', 'labels', 'model']);
const GENERATION_FIELDS = new Set([
  'stopSequences',
  'responseMimeType',
  'responseSchema',
  'responseJsonSchema',
  'responseModalities',
  'candidateCount',
  'maxOutputTokens',
  'temperature',
  'topP',
  'topK',
  'seed',
  'presencePenalty',
  'frequencyPenalty',
  'responseLogprobs',
  'logprobs',
  'enableEnhancedCivicAnswers',
  'speechConfig',
  'thinkingConfig',
  'mediaResolution',
]);
const PART_FIELDS = new Set([
  'text',
  'inlineData',
  'fileData',
  'functionCall',
  'functionResponse',
  'executableCode',
  'codeExecutionResult',
  'thought',
  'thoughtSignature',
  'videoMetadata',
]);

const unknownName = (k, at) => [400, `Invalid JSON payload received. Unknown name "${k}"${at ? ` at '${at}'` : ''}: Cannot find field.`];

const contentsOf = (body) => (Array.isArray(body?.contents) ? body.contents : []);
const partsOf = (c) => (Array.isArray(c?.parts) ? c.parts : []);

/** The text the default answer replies to: the last user content's text parts, else its function responses. */
export function lastUserText(body) {
  const contents = contentsOf(body);
  for (let i = contents.length - 1; i >= 0; i--) {
    const role = contents[i]?.role ?? 'user';
    if (role !== 'user') continue;
    const parts = partsOf(contents[i]);
    const texts = parts.filter((p) => typeof p?.text === 'string' && !p.thought).map((p) => p.text);
    if (texts.length) return texts.join('');
    return parts
      .map((p) => get(p, 'functionResponse'))
      .filter(Boolean)
      .map((fr) => JSON.stringify(fr.response ?? {}))
      .join('');
  }
  return '';
}

function imageCount(body) {
  let n = 0;
  for (const c of contentsOf(body)) {
    for (const p of partsOf(c)) {
      const media = get(p, 'inlineData') || get(p, 'fileData');
      if (media && /^image\//.test(get(media, 'mimeType') || '')) n++;
    }
  }
  return n;
}

/** The fake's promptTokenCount: the words of systemInstruction and of every part of every content. */
export function geminiPromptTokens(body) {
  let n = 0;
  for (const p of partsOf(get(body, 'systemInstruction'))) n += wordCount(p?.text);
  for (const c of contentsOf(body)) {
    for (const p of partsOf(c)) {
      if (typeof p?.text === 'string') n += wordCount(p.text);
      const fc = get(p, 'functionCall');
      if (fc) n += wordCount(JSON.stringify(fc.args ?? {}));
      const fr = get(p, 'functionResponse');
      if (fr) n += wordCount(JSON.stringify(fr.response ?? {}));
    }
  }
  return n;
}

/** A deterministic embedding of text (fakeEmbedding of server.mjs): equal texts, equal vectors. */
export const geminiEmbedding = fakeEmbedding;

function checkParts(parts, at) {
  if (!parts.length) return [400, `* GenerateContentRequest.${at}.parts: contents.parts must not be empty.\n`];
  for (const [j, p] of parts.entries()) {
    if (!p || typeof p !== 'object' || Array.isArray(p)) return [400, `Invalid value at '${at}.parts[${j}]': expected an object`];
    for (const k of Object.keys(p)) if (!PART_FIELDS.has(camel(k))) return unknownName(k, `${at}.parts[${j}]`);
    const inline = get(p, 'inlineData');
    if (inline && (!get(inline, 'mimeType') || typeof inline.data !== 'string')) {
      return [400, `* GenerateContentRequest.${at}.parts[${j}].inline_data: mime_type and data are required.\n`];
    }
    if (!Object.keys(p).some((k) => ['text', 'inlineData', 'fileData', 'functionCall', 'functionResponse', 'executableCode', 'codeExecutionResult'].includes(camel(k)))) {
      return [400, `* GenerateContentRequest.${at}.parts[${j}].data: required oneof field 'data' must have one initialized field\n`];
    }
  }
  return null;
}

// The first problem Google would report for a generateContent body, as [status, message], or null.
function validateGenerate(body) {
  if (body === undefined) return [400, 'Invalid JSON payload received. Unexpected token.'];
  if (!body || typeof body !== 'object' || Array.isArray(body)) return [400, 'Invalid JSON payload received. Expected an object.'];
  for (const k of Object.keys(body)) if (!REQUEST_FIELDS.has(camel(k))) return unknownName(k);
  const gc = get(body, 'generationConfig');
  if (gc !== undefined) {
    if (!gc || typeof gc !== 'object') return [400, "Invalid value at 'generation_config': expected an object"];
    for (const k of Object.keys(gc)) if (!GENERATION_FIELDS.has(camel(k))) return unknownName(k, 'generation_config');
    const t = gc.temperature;
    if (t !== undefined && (typeof t !== 'number' || t < 0 || t > 2)) return [400, '* GenerateContentRequest.generation_config.temperature: must be between 0 and 2\n'];
  }
  const contents = body.contents;
  if (!Array.isArray(contents) || !contents.length) return [400, '* GenerateContentRequest.contents: contents is not specified\n'];
  for (const [i, c] of contents.entries()) {
    if (!c || typeof c !== 'object') return [400, `Invalid value at 'contents[${i}]': expected an object`];
    if (c.role !== undefined && c.role !== 'user' && c.role !== 'model') return [400, 'Please use a valid role: user, model.'];
    const problem = checkParts(Array.isArray(c.parts) ? c.parts : [], `contents[${i}]`);
    if (problem) return problem;
  }
  const si = get(body, 'systemInstruction');
  if (si !== undefined) {
    const problem = checkParts(partsOf(si), 'system_instruction');
    if (problem) return problem;
  }
  if (body.tools !== undefined && !Array.isArray(body.tools)) return [400, "Invalid value at 'tools': expected a list"];
  for (const [i, t] of (body.tools || []).entries()) {
    for (const [j, fd] of (get(t, 'functionDeclarations') || []).entries()) {
      if (typeof fd?.name !== 'string' || !/^[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}$/.test(fd.name)) {
        return [400, `* GenerateContentRequest.tools[${i}].function_declarations[${j}].name: Invalid function name. Must start with a letter or an underscore. Must be alphameric (a-z, A-Z, 0-9), underscores (_), dots (.), colons (:) or dashes (-), with a maximum length of 64.\n`];
      }
    }
  }
  return null;
}

function functionDeclarations(body) {
  return (Array.isArray(body.tools) ? body.tools : []).flatMap((t) => get(t, 'functionDeclarations') || []).filter((fd) => fd && typeof fd.name === 'string');
}

// The candidate's parts and finishReason for this request.
function buildAnswer(body, b) {
  const decls = functionDeclarations(body);
  const fcc = get(get(body, 'toolConfig'), 'functionCallingConfig');
  const mode = fcc?.mode;
  const allowed = get(fcc, 'allowedFunctionNames');
  if (decls.length && mode !== 'NONE' && (b.tool || mode === 'ANY' || /use the tool/i.test(lastUserText(body)))) {
    const name = (typeof b.tool === 'object' && b.tool.name) || (Array.isArray(allowed) && allowed[0]) || decls[0].name;
    const decl = decls.find((d) => d.name === name);
    const args = typeof b.tool === 'object' && b.tool.args ? b.tool.args : sampleFromSchema(decl?.parameters ?? get(decl, 'parametersJsonSchema'));
    return { parts: [{ functionCall: { name, args } }], finishReason: 'STOP', text: '' };
  }
  const images = imageCount(body);
  let text = b.text !== undefined ? b.text : `reply to: ${lastUserText(body)}${images ? ` (images: ${images})` : ''}`;
  let finishReason = 'STOP';
  const gc = get(body, 'generationConfig') || {};
  let cutAt = -1;
  for (const s of get(gc, 'stopSequences') || []) {
    const at = s ? text.indexOf(s) : -1;
    if (at >= 0 && (cutAt < 0 || at < cutAt)) cutAt = at;
  }
  if (cutAt >= 0) text = text.slice(0, cutAt);
  const max = get(gc, 'maxOutputTokens');
  if (Number.isInteger(max) && wordCount(text) > max) {
    text = splitText(text)
      .filter((p) => /\S/.test(p))
      .slice(0, max)
      .join('');
    finishReason = 'MAX_TOKENS';
  }
  return { parts: [{ text }], finishReason, text };
}

const METHODS = ['generateContent', 'streamGenerateContent', 'embedContent', 'batchEmbedContents', 'countTokens'];

export async function startFakeGemini(options = {}) {
  const models = options.models || ['gemini-2.5-flash', 'gemini-2.5-pro', 'text-embedding-004'];

  async function handle(req, res, rec, b) {
    if (b.destroy) return cutConnection(req, { wait: false });
    if (b.hang) return; // the client (or close()) ends it
    if (b.delayMs) {
      await sleep(b.delayMs);
      if (res.destroyed) return;
    }
    const fail = (status, message, details) => sendJSON(res, rec, status, geminiErrorBody(status, message, details), { vary: 'Origin, X-Origin, Referer' });

    if (b.status !== undefined && b.status !== 200) {
      if (b.body !== undefined) return sendVerbatim(res, rec, b.status, b.body, b.headers || {});
      const details = b.status === 429 && b.retryDelay ? [{ '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: b.retryDelay }] : undefined;
      return sendJSON(res, rec, b.status, geminiErrorBody(b.status, undefined, details), b.headers || {});
    }

    const url = new URL(req.url, 'http://x');
    const isList = req.method === 'GET' && url.pathname === '/v1beta/models';
    const m = /^\/v1beta\/models\/([^/:]+):([A-Za-z]+)$/.exec(url.pathname);
    if (!isList && (!m || req.method !== 'POST' || !METHODS.includes(m[2]))) {
      return fail(404, `Method not found: ${req.method} ${url.pathname}`);
    }
    const key = req.headers['x-goog-api-key'] ?? url.searchParams.get('key') ?? undefined;
    if (options.apiKey !== undefined) {
      if (key === undefined) {
        return fail(
          403,
          "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API."
        );
      }
      if (key !== options.apiKey) {
        return fail(400, 'API key not valid. Please pass a valid API key.', [
          { '@type': 'type.googleapis.com/google.rpc.ErrorInfo', reason: 'API_KEY_INVALID', domain: 'googleapis.com', metadata: { service: 'generativelanguage.googleapis.com' } },
        ]);
      }
    }
    if (b.body !== undefined) return sendVerbatim(res, rec, 200, b.body, b.headers || {});

    if (isList) {
      const list = models.map((name) => ({
        name: `models/${name}`,
        version: '001',
        displayName: name,
        inputTokenLimit: 1048576,
        outputTokenLimit: 65536,
        supportedGenerationMethods: /embedding/.test(name) ? ['embedContent'] : ['generateContent', 'countTokens'],
      }));
      return sendJSON(res, rec, 200, { models: list });
    }

    const [, model, method] = m;
    rec.model = model;
    rec.methodName = method;
    const body = rec.body;

    if (method === 'embedContent' || method === 'batchEmbedContents') {
      if (body === undefined || !body || typeof body !== 'object') return fail(400, 'Invalid JSON payload received. Unexpected token.');
      const one = method === 'embedContent';
      const reqs = one ? [body] : body.requests;
      const what = one ? 'EmbedContentRequest' : 'BatchEmbedContentsRequest';
      if (!Array.isArray(reqs) || !reqs.length) return fail(400, `* ${what}.requests: requests is not specified\n`);
      const embeddings = [];
      for (const [i, r] of reqs.entries()) {
        const at = one ? '' : `requests[${i}].`;
        if (!one || r.model !== undefined) {
          if (r?.model !== `models/${model}`) return fail(400, `* ${what}.${at}model: the model must be models/${model} (the model of the URL), got ${JSON.stringify(r?.model)}\n`);
        }
        const parts = partsOf(r.content);
        if (!parts.length) return fail(400, `* ${what}.${at}content: content is not specified\n`);
        const dims = get(r, 'outputDimensionality') ?? 8;
        embeddings.push({ values: geminiEmbedding(parts.map((p) => p.text ?? '').join(''), dims) });
      }
      return sendJSON(res, rec, 200, one ? { embedding: embeddings[0] } : { embeddings });
    }

    if (method === 'countTokens') {
      const inner = body && typeof body === 'object' && body.generateContentRequest ? body.generateContentRequest : body;
      const problem = validateGenerate(inner);
      if (problem) return fail(...problem);
      const n = geminiPromptTokens(inner);
      return sendJSON(res, rec, 200, { totalTokens: n, promptTokensDetails: [{ modality: 'TEXT', tokenCount: n }] });
    }

    const problem = validateGenerate(body);
    if (problem) return fail(...problem);
    const { parts, finishReason, text } = buildAnswer(body, b);
    const prompt = geminiPromptTokens(body);
    const cand = parts[0].functionCall ? wordCount(JSON.stringify(parts[0].functionCall.args)) : wordCount(text);
    const usageMetadata = {
      promptTokenCount: prompt,
      candidatesTokenCount: cand,
      totalTokenCount: prompt + cand,
      promptTokensDetails: [{ modality: 'TEXT', tokenCount: prompt }],
    };
    const responseId = crypto.randomBytes(12).toString('base64url');
    rec.responseText = text;
    rec.responseUsage = usageMetadata;

    if (method === 'generateContent') {
      return sendJSON(
        res,
        rec,
        200,
        { candidates: [{ content: { parts, role: 'model' }, finishReason, index: 0 }], usageMetadata, modelVersion: model, responseId },
        b.headers || {}
      );
    }

    // streamGenerateContent: one chunk per piece of text, the last with finishReason and usage
    const pieces = parts[0].functionCall ? [parts[0]] : splitText(text, b.chunks).map((t) => ({ text: t }));
    let sofar = '';
    const chunks = pieces.map((part, i) => {
      const last = i === pieces.length - 1;
      if (part.text !== undefined) sofar += part.text;
      const chunk = { candidates: [{ content: { parts: [part], role: 'model' }, ...(last ? { finishReason } : {}), index: 0 }] };
      if (last) chunk.usageMetadata = usageMetadata;
      else if (b.usageEveryChunk) chunk.usageMetadata = { promptTokenCount: prompt, candidatesTokenCount: wordCount(sofar), totalTokenCount: prompt + wordCount(sofar) };
      chunk.modelVersion = model;
      chunk.responseId = responseId;
      return chunk;
    });
    rec.responseChunks = chunks;
    const sse = url.searchParams.get('alt') === 'sse';
    rec.responseStatus = 200;
    res.writeHead(200, {
      'content-type': sse ? 'text/event-stream' : 'application/json; charset=UTF-8',
      vary: 'Origin, X-Origin, Referer',
      ...(b.headers || {}),
    });
    res.flushHeaders();
    if (!sse) await writePiece(res, '[');
    for (const [i, chunk] of chunks.entries()) {
      if (res.destroyed) return;
      if (b.cutAfterEvents !== undefined && rec.sentEvents >= b.cutAfterEvents) return cutConnection(req);
      if (b.stallAfterEvents !== undefined && rec.sentEvents >= b.stallAfterEvents) return; // until the peer closes
      await writePiece(res, sse ? `data: ${JSON.stringify(chunk)}\r\n\r\n` : `${i ? ',\r\n' : ''}${JSON.stringify(chunk, null, 2)}`);
      rec.sentEvents++;
      if (b.chunkDelayMs) await sleep(b.chunkDelayMs);
    }
    if (res.destroyed) return;
    res.end(sse ? undefined : ']', () => (rec.finished = true));
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
    /** generateContent and streamGenerateContent requests (what most assertions look at). */
    generateRequests() {
      return srv.requests.filter((r) => /:(generateContent|streamGenerateContent)(\?|$)/.test(r.path));
    },
    chatRequests() {
      return this.generateRequests();
    },
    /** embedContent and batchEmbedContents requests. */
    embedRequests() {
      return srv.requests.filter((r) => /:(embedContent|batchEmbedContents)(\?|$)/.test(r.path));
    },
  };
}
