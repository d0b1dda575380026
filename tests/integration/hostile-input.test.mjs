// hostile-input.test.mjs — bytes a client or a provider may send that once crashed the gateway or
// slipped through it: paths, query values and model names that are not UTF-8 or are cut in the
// middle of a character by a fixed-size buffer, provider error messages of that kind, lone and
// mis-paired UTF-16 surrogate escapes, overlong and surrogate UTF-8 forms (on plain, Mock, context
// and context-API paths), and a body with 128,000 top-level keys. Every answer must be an OpenAI
// error JSON that is valid UTF-8, and the gateway must stay up.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';

import { startFakeOpenAI } from '../fakes/openai.mjs';
import { startGateway, withLogs } from '../lib/gateway.mjs';
import { assertOpenAIError, postJSON, rawRequest } from '../lib/http.mjs';

const strictUTF8 = new TextDecoder('utf-8', { fatal: true });
const EURO = '\u20ac'; // three bytes in UTF-8

/** Sends raw request bytes on a fresh connection; resolves with {status, headers, body (Buffer)}. */
function rawBytes(port, bytes, timeoutMs = 30000) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    const chunks = [];
    const timer = setTimeout(() => sock.destroy(new Error('no complete answer in time')), timeoutMs);
    sock.on('data', (c) => chunks.push(c));
    sock.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      const all = Buffer.concat(chunks);
      const end = all.indexOf('\r\n\r\n');
      if (end < 0) return reject(new Error(`no HTTP answer: ${JSON.stringify(all.toString('latin1'))}`));
      const head = all.subarray(0, end).toString('latin1').split('\r\n');
      const status = Number(head[0].split(' ')[1]);
      const headers = {};
      for (const line of head.slice(1)) {
        const i = line.indexOf(':');
        headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
      }
      resolve({ status, headers, body: all.subarray(end + 4) });
    });
    sock.end(bytes);
  });
}

/** The answer's body must be strict UTF-8 and an OpenAI error; returns body.error. */
function assertUTF8Error(res, status, code) {
  let text;
  assert.doesNotThrow(() => (text = strictUTF8.decode(res.body)), 'the body is valid UTF-8');
  const json = JSON.parse(text);
  return assertOpenAIError(assert, { status: res.status, json, text }, status, code);
}

/** A GET with a raw (not percent-encoded) request target. */
const rawGet = (port, target) =>
  rawBytes(port, Buffer.concat([Buffer.from('GET '), Buffer.isBuffer(target) ? target : Buffer.from(target), Buffer.from(' HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')]));

describe('hostile input', () => {
  let fake;
  let gw;

  before(async () => {
    fake = await startFakeOpenAI();
    gw = await startGateway({
      manifests: `
apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: solo}
spec:
  storage: {type: Memory}
---
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-hostile}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - name: up
    type: OpenAI
    config: {endpoint: "${fake.baseURL}", modelName: up-model}
  - name: echo
    type: Mock
    config: {modelName: gpt-4o-mini}
  routes:
  - {name: plain, pathPrefix: /v1, backends: [{target: up}]}
  - {name: mock, pathPrefix: /mock/v1, backends: [{target: echo}]}
  - {name: mock-ctx, pathPrefix: /mockctx/v1, backends: [{target: echo}], contextRef: {name: solo}}
  - {name: ctx, pathPrefix: /ctx/v1, backends: [{target: up}], contextRef: {name: solo}}
  authentication: {type: None}
  transformation:
    inputValidation: {maxBodyBytes: 4194304}
`,
    });
  });

  after(async () => {
    if (gw) await gw.stop();
    if (fake) await fake.close();
  });

  beforeEach(() => fake.reset());

  const logs = () => gw;
  const alive = async () => {
    const h = await rawRequest(`${gw.url}/healthz`);
    assert.equal(h.status, 200, 'the gateway is still up');
  };

  describe('error messages quoting bad bytes stay valid UTF-8 (no crash)', () => {
    test(
      'GET /\\xff → 404 with U+FFFD in the message',
      withLogs(logs, async () => {
        const res = await rawGet(gw.port, Buffer.from([0x2f, 0xff]));
        const e = assertUTF8Error(res, 404, 'unknown_url');
        assert.ok(e.message.includes('/\ufffd'), e.message);
        await alive();
      })
    );

    test(
      'a ~1000-byte path ending in multi-byte characters, cut at every alignment',
      withLogs(logs, async () => {
        for (let pad = 990; pad < 996; pad++) {
          const res = await rawGet(gw.port, Buffer.from('/' + 'a'.repeat(pad) + EURO.repeat(20)));
          const e = assertUTF8Error(res, 404, 'unknown_url');
          assert.ok(!e.message.includes('\ufffd'), 'a long message is cut between characters, not in one');
        }
        await alive();
      })
    );

    test(
      'GET /v1/contexts?mcp=%ff and ?limit=%ff → 400 naming the parameter',
      withLogs(logs, async () => {
        const mcp = await rawGet(gw.port, '/v1/contexts?mcp=%ff');
        assert.equal(assertUTF8Error(mcp, 400, 'invalid_value').param, 'mcp');
        const limit = await rawGet(gw.port, '/v1/contexts?limit=%ff');
        assert.equal(assertUTF8Error(limit, 400, 'invalid_value').param, 'limit');
        // a valid but unknown UTF-8 name is quoted as it is
        const named = await rawRequest(`${gw.url}/v1/contexts?mcp=${encodeURIComponent(EURO.repeat(400))}`);
        const e = assertOpenAIError(assert, named, 404, 'mcp_not_found');
        assert.ok(e.message.includes(EURO.repeat(10)));
        await alive();
      })
    );

    test(
      'a long non-ASCII model name → 404 model_not_found, cut between characters',
      withLogs(logs, async () => {
        for (const model of [EURO.repeat(400), 'x' + EURO.repeat(400), 'xy' + EURO.repeat(400)]) {
          const res = await postJSON(`${gw.baseURL}/chat/completions`, { model, messages: [{ role: 'user', content: 'x' }] });
          const e = assertOpenAIError(assert, res, 404, 'model_not_found');
          assert.equal(e.param, 'model');
          assert.ok(!e.message.includes('\ufffd'), e.message.slice(-40));
        }
        await alive();
      })
    );

    test(
      'a provider 429 / 500 whose error.message is > 511 bytes of non-ASCII',
      withLogs(logs, async () => {
        for (const lead of ['', 'a', 'ab']) {
          const message = lead + EURO.repeat(300);
          fake.next({ status: 429, body: { error: { message, type: 'tokens', param: null, code: 'rate_limit_exceeded' } } });
          const r429 = await postJSON(`${gw.baseURL}/chat/completions`, { model: 'up', messages: [{ role: 'user', content: 'x' }] });
          const e429 = assertOpenAIError(assert, r429, 429, 'rate_limit_exceeded');
          assert.equal(e429.type, 'tokens', "the provider's own rate-limit type");
          assert.ok(e429.message.includes(lead + EURO.repeat(100)));
          assert.ok(!e429.message.includes('\ufffd'));
          fake.next({ status: 500, body: { error: { message, type: 'server_error', param: null, code: null } } });
          const r500 = await postJSON(`${gw.baseURL}/chat/completions`, { model: 'up', messages: [{ role: 'user', content: 'x' }] });
          const e500 = assertOpenAIError(assert, r500, 502, 'upstream_error');
          assert.ok(!e500.message.includes('\ufffd'));
        }
        await alive();
      })
    );
  });

  describe('text that is not strict UTF-8 → 400 invalid_encoding on every path', () => {
    const chatPaths = ['/v1', '/mock/v1', '/mockctx/v1', '/ctx/v1'];
    // bodies as raw bytes: the content string holds the bad text
    const withContent = (bytes) =>
      Buffer.concat([Buffer.from('{"model":"MODEL","messages":[{"role":"user","content":"'), bytes, Buffer.from('"}]}')]);
    const cases = [
      ['a lone low surrogate escape', Buffer.from('a\\udc00b')],
      ['a lone high surrogate escape', Buffer.from('a\\ud800b')],
      ['a mis-paired surrogate escape (once U+10041)', Buffer.from('\\ud800\\u0041')],
      ['an overlong form (C0 AF)', Buffer.from([0x61, 0xc0, 0xaf])],
      ['a surrogate encoded in UTF-8 (ED A0 80)', Buffer.from([0xed, 0xa0, 0x80])],
      ['a code point above U+10FFFF (F4 90 80 80)', Buffer.from([0xf4, 0x90, 0x80, 0x80])],
      ['a truncated sequence (E2 82)', Buffer.from([0xe2, 0x82])],
    ];

    for (const [what, bytes] of cases) {
      test(
        `${what}: refused on plain, Mock and context routes, nothing forwarded`,
        withLogs(logs, async () => {
          for (const p of chatPaths) {
            const model = p.includes('mock') ? 'echo' : 'up';
            const body = Buffer.from(withContent(bytes).toString('latin1').replace('MODEL', model), 'latin1');
            const res = await postJSON(`${gw.url}${p}/chat/completions`, body, { headers: { 'x-conversation-id': 'enc-1' } });
            const e = assertOpenAIError(assert, res, 400, 'invalid_encoding');
            assert.equal(e.type, 'invalid_request_error');
            assert.equal(e.param, 'messages', `${p}: ${res.text}`);
            assert.match(e.message, /messages\[0\]/);
          }
          assert.equal(fake.requests.length, 0, 'nothing reached the provider');
          await alive();
        })
      );
    }

    test(
      'POST /v1/contexts/{id}/messages with a lone surrogate → 400 invalid_encoding, nothing stored',
      withLogs(logs, async () => {
        const res = await postJSON(`${gw.url}/v1/contexts/enc-api/messages`, '{"messages":[{"role":"user","content":"a\\udc00b"}]}');
        const e = assertOpenAIError(assert, res, 400, 'invalid_encoding');
        assert.equal(e.param, 'messages');
        const got = await rawRequest(`${gw.url}/v1/contexts/enc-api`);
        assert.equal(got.status, 404, got.text);
      })
    );

    test(
      'a proper surrogate pair and every plane pass, unchanged',
      withLogs(logs, async () => {
        const text = 'pair \\ud83d\\ude00, raw \u{1F600}, \u{10FFFF}, \ud7ff, \ue000';
        const raw = `{"model":"up","messages":[{"role":"user","content":"${text}"}]}`;
        const res = await postJSON(`${gw.baseURL}/chat/completions`, raw);
        assert.equal(res.status, 200, res.text);
        assert.equal(fake.chatRequests()[0].raw, raw.replace('"up"', '"up-model"'), 'forwarded as the client sent it');
        const mock = await postJSON(`${gw.url}/mock/v1/chat/completions`, raw.replace('"up"', '"echo"'));
        assert.equal(mock.status, 200, mock.text);
        assert.equal(mock.json.choices[0].message.content, JSON.parse(`"${text}"`));
      })
    );
  });

  test(
    'a body with 128,000 distinct top-level keys → 400 too_many_keys, and other connections are served',
    { timeout: 300000 },
    withLogs(logs, async () => {
      const parts = ['"model":"up"', '"messages":[{"role":"user","content":"x"}]'];
      for (let i = 0; i < 128000; i++) parts.push(`"${i.toString(36)}":0`);
      const big = `{${parts.join(',')}}`;
      const pending = postJSON(`${gw.baseURL}/chat/completions`, big, { timeoutMs: 240000 });
      // meanwhile, ordinary requests on other connections
      const small = await Promise.all(
        Array.from({ length: 4 }, () => postJSON(`${gw.url}/mock/v1/chat/completions`, { model: 'echo', messages: [{ role: 'user', content: 'hi' }] }))
      );
      for (const r of small) assert.equal(r.status, 200, r.text);
      const res = await pending;
      const e = assertOpenAIError(assert, res, 400, 'too_many_keys');
      assert.match(e.message, /256 top-level keys/);
      assert.equal(fake.requests.length, 0);
    })
  );
});
