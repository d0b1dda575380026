// errors.test.mjs — bad requests (400/404/405/413) and upstream trouble (5xx, 429, timeouts,
// refused connections, failover, a stream cut in the middle, a client that goes away), all in
// OpenAI's error JSON, checked with raw HTTP and the `openai` SDK.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';

import { startFakeOpenAI, openaiErrorBody } from '../fakes/openai.mjs';
import { freePort, startGateway, withLogs } from '../lib/gateway.mjs';
import { assertOpenAIError, collectStream, postJSON, rawRequest, sseData, waitFor, within } from '../lib/http.mjs';

const chatBody = (model, extra = {}) => ({ model, messages: [{ role: 'user', content: 'hello upstream' }], ...extra });

describe('errors', () => {
  let fakeA;
  let fakeB;
  let gw;
  let client; // route main (/v1)
  let foClient; // route with failover (/failover/v1)

  before(async () => {
    fakeA = await startFakeOpenAI();
    fakeB = await startFakeOpenAI();
    const deadPort = await freePort(); // nothing listens there
    gw = await startGateway({
      manifests: `
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-errors}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - name: up
    type: OpenAI
    config: {endpoint: "${fakeA.baseURL}", modelName: up-model, timeouts: {connect: 5, firstToken: 30, total: 60}}
  - name: slow
    type: OpenAI
    config: {endpoint: "${fakeA.baseURL}", modelName: slow-model, timeouts: {connect: 5, firstToken: 1, total: 60}}
  - name: dead
    type: OpenAICompatible
    config: {endpoint: "http://127.0.0.1:${deadPort}/v1", modelName: dead-model, timeouts: {connect: 2, firstToken: 5, total: 10}}
  - name: primary
    type: OpenAI
    config: {endpoint: "${fakeA.baseURL}", modelName: primary-model}
  - name: secondary
    type: OpenAI
    config: {endpoint: "${fakeB.baseURL}", modelName: secondary-model}
  - name: primary-dead
    type: OpenAICompatible
    config: {endpoint: "http://127.0.0.1:${deadPort}/v1", modelName: dead-model, timeouts: {connect: 2}}
  routes:
  - name: main
    pathPrefix: /v1
    backends: [{target: up}, {target: slow}, {target: dead}]
  - name: fo
    pathPrefix: /failover/v1
    backends: [{target: primary}, {target: primary-dead}]
    failover:
      targets: [secondary]
      retryOn: [429, 500, 502, 503, 504, connect-failure, timeout]
      maxAttempts: 2
      backoffMs: 10
  authentication: {type: None}
  transformation:
    inputValidation: {maxBodyBytes: 4096}
`,
    });
    client = new OpenAI({ baseURL: gw.baseURL, apiKey: 'unused', maxRetries: 0, timeout: 30000 });
    foClient = new OpenAI({ baseURL: `${gw.url}/failover/v1`, apiKey: 'unused', maxRetries: 0, timeout: 30000 });
  });

  after(async () => {
    if (gw) await gw.stop();
    if (fakeA) await fakeA.close();
    if (fakeB) await fakeB.close();
  });

  beforeEach(() => {
    fakeA.reset();
    fakeB.reset();
  });

  const logs = () => gw;
  const chatURL = () => `${gw.baseURL}/chat/completions`;

  describe('bad requests → 400 invalid_request_error', () => {
    test(
      'body that is not JSON → invalid_json',
      withLogs(logs, async () => {
        const res = await postJSON(chatURL(), '{"model": "up", "messages": [', {});
        const e = assertOpenAIError(assert, res, 400, 'invalid_json');
        assert.equal(e.type, 'invalid_request_error');
        assert.equal(fakeA.requests.length, 0, 'nothing reached the provider');
      })
    );

    test(
      'body that is JSON but not an object',
      withLogs(logs, async () => {
        const res = await postJSON(chatURL(), '[1, 2, 3]');
        const e = assertOpenAIError(assert, res, 400);
        assert.equal(e.type, 'invalid_request_error');
      })
    );

    test(
      'model missing → param model, code missing_required_parameter; model not a string → invalid_type',
      withLogs(logs, async () => {
        const a = await postJSON(chatURL(), { messages: [{ role: 'user', content: 'x' }] });
        const e = assertOpenAIError(assert, a, 400, 'missing_required_parameter');
        assert.equal(e.param, 'model');
        assert.equal(e.type, 'invalid_request_error');
        const b = await postJSON(chatURL(), { model: 42, messages: [{ role: 'user', content: 'x' }] });
        const f = assertOpenAIError(assert, b, 400, 'invalid_type');
        assert.equal(f.param, 'model');
      })
    );

    test(
      'messages missing, empty or not an array → param messages',
      withLogs(logs, async () => {
        for (const body of [{ model: 'up' }, { model: 'up', messages: [] }, { model: 'up', messages: 'hello' }]) {
          const res = await postJSON(chatURL(), body);
          const e = assertOpenAIError(assert, res, 400);
          assert.equal(e.param, 'messages', `for ${JSON.stringify(body)}`);
          assert.equal(e.type, 'invalid_request_error');
        }
        assert.equal(fakeA.requests.length, 0);
      })
    );

    test(
      'a top-level key sent twice → 400 duplicate_key (never forwarded with two models)',
      withLogs(logs, async () => {
        // jansson-style "last wins" routing plus a provider reading the first value would let a
        // caller reach a model its key may not use: the gateway refuses the body instead
        const raw = '{"model":"not-allowed","model":"up","messages":[{"role":"user","content":"x"}]}';
        const res = await postJSON(chatURL(), raw);
        const e = assertOpenAIError(assert, res, 400, 'duplicate_key');
        assert.equal(e.param, 'model');
        assert.equal(fakeA.requests.length, 0);
        // the same key nested inside a message is data, not a duplicate
        const ok = await postJSON(
          chatURL(),
          '{"model":"up","messages":[{"role":"user","content":"x","model":"y"}]}'
        );
        assert.equal(ok.status, 200, ok.text);
      })
    );

    test(
      'stream not a boolean → param stream',
      withLogs(logs, async () => {
        const res = await postJSON(chatURL(), chatBody('up', { stream: 'yes' }));
        const e = assertOpenAIError(assert, res, 400);
        assert.equal(e.param, 'stream');
      })
    );

    test(
      'the SDK sees BadRequestError for a request the gateway rejects',
      withLogs(logs, async () => {
        await assert.rejects(client.chat.completions.create({ model: 'up', messages: [] }), (err) => {
          assert.ok(err instanceof OpenAI.BadRequestError, `BadRequestError, got ${err?.constructor?.name}: ${err}`);
          assert.equal(err.status, 400);
          assert.equal(err.param, 'messages');
          return true;
        });
      })
    );
  });

  test(
    'body over inputValidation.maxBodyBytes → 413 request_too_large; just under is fine',
    withLogs(logs, async () => {
      const big = chatBody('up', { messages: [{ role: 'user', content: 'x'.repeat(6000) }] });
      const res = await postJSON(chatURL(), big);
      assertOpenAIError(assert, res, 413, 'request_too_large');
      assert.equal(fakeA.requests.length, 0);
      const ok = await postJSON(chatURL(), chatBody('up', { messages: [{ role: 'user', content: 'y'.repeat(3000) }] }));
      assert.equal(ok.status, 200, ok.text);
    })
  );

  test(
    'unknown path → 404 OpenAI error JSON; wrong method on a known path → 405',
    withLogs(logs, async () => {
      const a = await rawRequest(`${gw.baseURL}/no-such-endpoint`);
      assertOpenAIError(assert, a, 404);
      const b = await rawRequest(`${gw.url}/completely/elsewhere`);
      assertOpenAIError(assert, b, 404);
      const c = await rawRequest(chatURL(), { method: 'GET' });
      assert.equal(c.status, 405, c.text);
      assert.equal(fakeA.requests.length, 0);
    })
  );

  describe('upstream failures', () => {
    test(
      "provider 500 → 502 server_error/upstream_error naming the target and the provider's message",
      withLogs(logs, async () => {
        fakeA.next({ status: 500 });
        const res = await postJSON(chatURL(), chatBody('up'));
        const e = assertOpenAIError(assert, res, 502, 'upstream_error');
        assert.equal(e.type, 'server_error');
        assert.equal(e.message, `upstream 'up' returned HTTP 500: ${openaiErrorBody(500).error.message}`);
        assert.equal(fakeA.chatRequests().length, 1, 'no retry without failover');

        fakeA.next({ status: 500 });
        await assert.rejects(client.chat.completions.create(chatBody('up')), (err) => {
          assert.ok(err instanceof OpenAI.APIError);
          assert.equal(err.status, 502);
          assert.equal(err.code, 'upstream_error');
          return true;
        });
      })
    );

    test(
      'provider 429 → 429 relayed with Retry-After (SDK RateLimitError)',
      withLogs(logs, async () => {
        fakeA.next({ status: 429, headers: { 'retry-after': '7' } });
        const res = await postJSON(chatURL(), chatBody('up'));
        assert.equal(res.status, 429, res.text);
        assert.equal(res.headers['retry-after'], '7');
        const e = assertOpenAIError(assert, res, 429, 'rate_limit_exceeded');
        assert.equal(e.type, 'requests', "OpenAI's type for a request-rate limit");

        fakeA.next({ status: 429, headers: { 'retry-after': '3' } });
        await assert.rejects(client.chat.completions.create(chatBody('up')), (err) => {
          assert.ok(err instanceof OpenAI.RateLimitError, `RateLimitError, got ${err?.constructor?.name}`);
          assert.equal(err.status, 429);
          assert.equal(err.headers.get('retry-after'), '3');
          return true;
        });
      })
    );

    test(
      "provider 429: its x-ratelimit-* headers are relayed when they look like one, dropped when oversized (a 20 KB value would break the client's parser)",
      withLogs(logs, async () => {
        fakeA.next({
          status: 429,
          headers: { 'retry-after': '2', 'x-ratelimit-remaining-requests': '0', 'x-ratelimit-limit-tokens': 'x'.repeat(20000) },
        });
        const res = await postJSON(chatURL(), chatBody('up'));
        assert.equal(res.status, 429, res.text);
        assert.equal(res.headers['x-ratelimit-remaining-requests'], '0');
        assert.equal(res.headers['x-ratelimit-limit-tokens'], undefined);
        assert.equal(res.headers['retry-after'], '2');
      })
    );

    test(
      'provider slower than timeouts.firstToken → 504 upstream_timeout',
      withLogs(logs, async () => {
        fakeA.next({ delayMs: 4000 });
        const res = await postJSON(chatURL(), chatBody('slow'));
        const e = assertOpenAIError(assert, res, 504, 'upstream_timeout');
        assert.equal(e.type, 'server_error');
        assert.equal(e.message, "Model target 'slow' did not answer in time (timeouts: firstToken 1 s, total 60 s).");
        assert.equal(fakeA.chatRequests()[0].body.model, 'slow-model');
      })
    );

    test(
      'streamed request, provider slower than timeouts.firstToken → 504 JSON before any byte',
      withLogs(logs, async () => {
        fakeA.next({ delayMs: 4000 });
        const res = await postJSON(chatURL(), chatBody('slow', { stream: true }));
        assertOpenAIError(assert, res, 504, 'upstream_timeout');
        assert.match(res.headers['content-type'], /^application\/json/);
      })
    );

    test(
      'connection refused → 502 upstream_unavailable',
      withLogs(logs, async () => {
        const res = await postJSON(chatURL(), chatBody('dead'));
        const e = assertOpenAIError(assert, res, 502, 'upstream_unavailable');
        // what failed in the caller's terms; the upstream URL and the system error stay in the log
        assert.equal(e.type, 'server_error');
        assert.equal(e.message, "Could not connect to model target 'dead'.");
        await assert.rejects(client.chat.completions.create(chatBody('dead', { stream: true })), (err) => {
          assert.equal(err.status, 502);
          assert.equal(err.code, 'upstream_unavailable');
          return true;
        });
      })
    );

    test(
      'streamed request, provider 500 before the first byte → a normal JSON 502',
      withLogs(logs, async () => {
        fakeA.next({ status: 500 });
        const res = await postJSON(chatURL(), chatBody('up', { stream: true }));
        assertOpenAIError(assert, res, 502, 'upstream_error');
        assert.match(res.headers['content-type'], /^application\/json/);
      })
    );

    test(
      'provider drops the connection without answering → 502',
      withLogs(logs, async () => {
        // every attempt: an HTTP client may retry once on a fresh connection when a reused one dies
        fakeA.setDefault({ destroy: true });
        const res = await postJSON(chatURL(), chatBody('up'));
        assertOpenAIError(assert, res, 502);
      })
    );
  });

  describe('failover', () => {
    test(
      'the chosen target answers 500 → the failover target answers',
      withLogs(logs, async () => {
        fakeA.next({ status: 500 });
        const c = await foClient.chat.completions.create(chatBody('primary'));
        assert.equal(c.choices[0].message.content, 'reply to: hello upstream');
        assert.equal(fakeA.chatRequests().length, 1);
        assert.equal(fakeA.chatRequests()[0].body.model, 'primary-model');
        assert.equal(fakeB.chatRequests().length, 1);
        assert.equal(fakeB.chatRequests()[0].body.model, 'secondary-model');
      })
    );

    test(
      'connect failure → the failover target answers',
      withLogs(logs, async () => {
        const c = await foClient.chat.completions.create(chatBody('primary-dead'));
        assert.equal(c.choices[0].message.content, 'reply to: hello upstream');
        assert.equal(fakeB.chatRequests().length, 1);
      })
    );

    test(
      'streamed: failure before the first byte fails over, and the stream comes from the next target',
      withLogs(logs, async () => {
        fakeA.next({ status: 503 });
        const stream = await foClient.chat.completions.create(chatBody('primary', { stream: true }));
        const { text } = await collectStream(stream);
        assert.equal(text, 'reply to: hello upstream');
        assert.equal(fakeA.chatRequests().length, 1);
        assert.equal(fakeB.chatRequests().length, 1);
        assert.equal(fakeB.chatRequests()[0].body.stream, true);
      })
    );

    test(
      'an outcome outside retryOn (400) is not retried',
      withLogs(logs, async () => {
        fakeA.next({ status: 400 });
        const res = await postJSON(`${gw.url}/failover/v1/chat/completions`, chatBody('primary'));
        assert.equal(res.status, 400, res.text);
        assert.equal(fakeB.requests.length, 0, 'no failover for a 400');
      })
    );

    test(
      'maxAttempts bounds the attempts: both failing → the last error, two upstream calls in all',
      withLogs(logs, async () => {
        fakeA.next({ status: 500 });
        fakeB.next({ status: 503 });
        const res = await postJSON(`${gw.url}/failover/v1/chat/completions`, chatBody('primary'));
        assert.equal(res.status, 502, res.text);
        assertOpenAIError(assert, res, 502, 'upstream_error');
        assert.equal(fakeA.chatRequests().length + fakeB.chatRequests().length, 2);
      })
    );
  });

  describe('streams that end badly', () => {
    test(
      'provider cuts the stream mid-way → the SDK stream throws after the chunks that arrived',
      withLogs(logs, async () => {
        fakeA.next({ cutAfterChunks: 2, text: 'one two three four five six' });
        const stream = await client.chat.completions.create(chatBody('up', { stream: true }));
        let text = '';
        await assert.rejects(
          (async () => {
            for await (const chunk of stream) text += chunk.choices[0]?.delta?.content || '';
          })(),
          (err) => {
            assert.ok(err instanceof OpenAI.APIError, `APIError from the error event, got ${err?.constructor?.name}: ${err}`);
            return true;
          }
        );
        assert.equal(text, 'one two', 'the chunks before the cut arrived intact');
      })
    );

    test(
      'mid-stream cut on the wire: an error event of type server_error, and no [DONE]',
      withLogs(logs, async () => {
        fakeA.next({ cutAfterChunks: 1, text: 'alpha beta gamma' });
        const res = await postJSON(chatURL(), chatBody('up', { stream: true }));
        assert.equal(res.status, 200);
        const data = sseData(res.text);
        assert.ok(!data.includes('[DONE]'), `no [DONE] after an error: ${res.text}`);
        const last = JSON.parse(data[data.length - 1]);
        assert.ok(last.error, `the last event is an error: ${res.text}`);
        assert.equal(last.error.type, 'server_error');
        assert.equal(last.error.code, 'upstream_error');
        assert.doesNotMatch(last.error.message, /127\.0\.0\.1|http:/, 'no upstream address in the message');
        assert.equal(typeof last.error.message, 'string');
        assert.equal(JSON.parse(data[1]).choices[0].delta.content, 'alpha');
      })
    );

    test(
      'a client that disconnects mid-stream cancels the upstream request',
      withLogs(logs, async () => {
        const words = Array.from({ length: 60 }, (_, i) => `w${i}`).join(' ');
        fakeA.next({ text: words, chunkDelayMs: 150 });
        const controller = new AbortController();
        const stream = await client.chat.completions.create(chatBody('up', { stream: true }), { signal: controller.signal });
        let n = 0;
        for await (const chunk of stream) {
          if (chunk.choices[0]?.delta?.content) n++;
          if (n === 2) {
            controller.abort();
            break;
          }
        }
        assert.equal(n, 2);
        await fakeA.waitForRequests(1);
        const up = fakeA.chatRequests()[0];
        await within(up.closed, 10000, 'the upstream connection to close after the client left');
        assert.equal(up.clientClosedEarly, true, 'the gateway closed the upstream request before it finished');
        assert.equal(up.finished, false);
        assert.ok(up.sentChunks < 62, `the provider did not stream to the end (sent ${up.sentChunks})`);
        // the gateway is fine afterwards
        const ok = await client.chat.completions.create(chatBody('up'));
        assert.equal(ok.choices[0].message.content, 'reply to: hello upstream');
      })
    );
  });
});

describe('errors keep internals in the log', () => {
  let fake;
  let gw;
  let tokDir;
  let deadPort;

  before(async () => {
    fake = await startFakeOpenAI();
    deadPort = await freePort();
    // a tokenizer folder whose data is damaged: loading it fails with a message naming the file
    tokDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ctxgate-tok-broken-'));
    for (const name of ['o200k_base', 'cl100k_base']) fs.writeFileSync(path.join(tokDir, `${name}.tiktoken`), 'not a tokenizer\n');
    gw = await startGateway({
      manifests: `
apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: down}
spec:
  storage: {type: Redis, config: {url: "redis://127.0.0.1:${deadPort}"}}
---
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-errors-internals}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - name: up
    type: OpenAI
    config: {endpoint: "${fake.baseURL}", modelName: gpt-4o-mini}
  routes:
  - {name: down, pathPrefix: /down/v1, backends: [{target: up}], contextRef: {name: down}}
  authentication: {type: None}
`,
    });
  });

  after(async () => {
    if (gw) await gw.stop();
    if (fake) await fake.close();
    if (tokDir) fs.rmSync(tokDir, { recursive: true, force: true });
  });

  const logs = () => gw;
  const headers = { 'x-conversation-id': 'internals-1' };

  // The tokenizer a TokenBudget route needs is loaded when the configuration is (serve, validate,
  // reload): damaged data stops the start with the file named to the operator, so no request
  // meets it (the 500 tokenizer_unavailable path stays for the impossible case).
  test('damaged tokenizer data → serve refuses to start, naming the file in its log; no client sees it', async () => {
    await assert.rejects(
      startGateway({
        env: { CTXGATE_TOKENIZER_DIR: tokDir },
        manifests: `
apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: budget}
spec:
  storage: {type: Memory}
  contextStrategy: {type: TokenBudget, maxContextTokens: 1000}
---
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-errors-tokenizer}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - name: up
    type: OpenAI
    config: {endpoint: "${fake.baseURL}", modelName: gpt-4o-mini}
  routes:
  - {name: budget, pathPrefix: /budget/v1, backends: [{target: up}], contextRef: {name: budget}}
  authentication: {type: None}
`,
      }),
      (err) => {
        assert.match(err.message, /exited during start-up/);
        assert.ok(err.message.includes(path.join(tokDir, 'o200k_base.tiktoken')), err.message);
        assert.match(err.message, /TokenBudget/);
        return true;
      }
    );
    assert.equal(fake.requests.length, 0);
  });

  test(
    'context store unreachable → 503 context_store_unavailable without its address; the address is in the log',
    withLogs(logs, async () => {
      const res = await postJSON(`${gw.url}/down/v1/chat/completions`, chatBody('up'), { headers });
      const e = assertOpenAIError(assert, res, 503, 'context_store_unavailable');
      assert.equal(e.type, 'server_error');
      assert.equal(e.message, "The context store of ModelContextProtocol 'down' is unavailable.");
      const api = await rawRequest(`${gw.url}/v1/contexts/internals-1?mcp=down`);
      const f = assertOpenAIError(assert, api, 503, 'context_store_unavailable');
      assert.ok(!f.message.includes(String(deadPort)), f.message);
      await waitFor(() => gw.stderr().includes(`127.0.0.1:${deadPort}`), { what: 'the log to name the address' });
    })
  );
});
