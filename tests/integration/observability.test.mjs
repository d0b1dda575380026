// observability.test.mjs — /healthz, /readyz, the metrics endpoint (request counter and token
// counters with their labels), X-Request-Id, the JSON access log, the ready log line, and many
// sequential requests on one keep-alive connection.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import OpenAI from 'openai';

import { metricSum, startGateway, withLogs } from '../lib/gateway.mjs';
import { postJSON, rawRequest, waitFor } from '../lib/http.mjs';
import { chatPromptTokens, textTokens } from '../lib/tokens.mjs';

describe('observability', () => {
  let gw;

  before(async () => {
    gw = await startGateway({
      metricsPath: '/prom-metrics',
      manifests: `
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-obs}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - name: echo
    type: Mock
  routes:
  - name: main
    backends: [{target: echo}]
  authentication: {type: None}
  observability:
    loggingLevel: info
    accessLog: {format: JSON}
    metricsEndpoint: /prom-metrics
`,
    });
  });

  after(async () => {
    if (gw) await gw.stop();
  });

  const logs = () => gw;

  test(
    'the ready line names the port and the worker count',
    withLogs(logs, async () => {
      assert.match(gw.stderr(), new RegExp(`listening on port ${gw.port} \\(2 workers\\)`));
    })
  );

  test(
    '/healthz and /readyz',
    withLogs(logs, async () => {
      const h = await rawRequest(`${gw.url}/healthz`);
      assert.equal(h.status, 200);
      assert.deepEqual(h.json, { status: 'ok' });
      const r = await rawRequest(`${gw.url}/readyz`);
      assert.equal(r.status, 200);
      assert.deepEqual(r.json, { status: 'ready' });
      assert.ok(h.headers['x-request-id'], 'fixed paths carry X-Request-Id too');
    })
  );

  test(
    'metrics: requests_total, duration histogram and token counters move with the right labels',
    withLogs(logs, async () => {
      const before = await gw.metrics();
      assert.equal(before.status, 200);
      assert.match(before.headers.get('content-type'), /^text\/plain/);
      const labels = { gateway: 'it-obs', route: 'main', model: 'echo' };
      const c0 = metricSum(before.samples, 'ctxgate_requests_total', { ...labels, status: '200' });
      const d0 = metricSum(before.samples, 'ctxgate_request_duration_seconds_count', labels);
      const p0 = metricSum(before.samples, 'ctxgate_prompt_tokens_total', labels);
      const k0 = metricSum(before.samples, 'ctxgate_completion_tokens_total', labels);

      const client = new OpenAI({ baseURL: gw.baseURL, apiKey: 'x', maxRetries: 0 });
      const texts = ['metrics one', 'metrics number two', 'three'];
      for (const t of texts) await client.chat.completions.create({ model: 'echo', messages: [{ role: 'user', content: t }] });
      const nf = await postJSON(`${gw.baseURL}/chat/completions`, { model: 'nope', messages: [{ role: 'user', content: 'x' }] });
      assert.equal(nf.status, 404);

      const m = await gw.metrics();
      assert.equal(metricSum(m.samples, 'ctxgate_requests_total', { ...labels, status: '200' }) - c0, 3, m.text);
      assert.equal(metricSum(m.samples, 'ctxgate_request_duration_seconds_count', labels) - d0, 3);
      const prompt = texts.reduce((n, t) => n + chatPromptTokens([{ role: 'user', content: t }]), 0);
      const completion = texts.reduce((n, t) => n + textTokens(t), 0);
      assert.equal(metricSum(m.samples, 'ctxgate_prompt_tokens_total', labels) - p0, prompt);
      assert.equal(metricSum(m.samples, 'ctxgate_completion_tokens_total', labels) - k0, completion);
      assert.ok(
        m.samples.some((s) => s.name === 'ctxgate_requests_total' && s.labels.status === '404' && s.labels.gateway === 'it-obs'),
        'the 404 is counted with its status'
      );
      for (const name of ['ctxgate_requests_in_flight', 'ctxgate_config_reloads_total', 'ctxgate_request_duration_seconds_bucket']) {
        assert.ok(m.text.includes(name), `${name} is exposed`);
      }
      assert.match(m.text, /# TYPE ctxgate_requests_total counter/);
      assert.match(m.text, /# TYPE ctxgate_request_duration_seconds histogram/);
    })
  );

  test(
    'streamed requests feed the time-to-first-token histogram',
    withLogs(logs, async () => {
      const labels = { gateway: 'it-obs', route: 'main', model: 'echo' };
      const b = metricSum((await gw.metrics()).samples, 'ctxgate_time_to_first_token_seconds_count', labels);
      const res = await postJSON(`${gw.baseURL}/chat/completions`, {
        model: 'echo',
        stream: true,
        messages: [{ role: 'user', content: 'ttft' }],
      });
      assert.equal(res.status, 200);
      const a = metricSum((await gw.metrics()).samples, 'ctxgate_time_to_first_token_seconds_count', labels);
      assert.equal(a - b, 1);
    })
  );

  test(
    'X-Request-Id is echoed and lands in the JSON access log line of that request',
    withLogs(logs, async () => {
      const id = 'obs-acc-7f3a9c';
      const res = await postJSON(`${gw.baseURL}/chat/completions`, { model: 'echo', messages: [{ role: 'user', content: 'log me' }] }, { headers: { 'x-request-id': id } });
      assert.equal(res.status, 200);
      assert.equal(res.headers['x-request-id'], id);
      const line = await waitFor(() => gw.accessLog().find((l) => !l.raw && Object.values(l).includes(id)), {
        what: `an access-log line with ${id}`,
      });
      assert.ok(Object.values(line).includes('/v1/chat/completions'), `the line names the path: ${JSON.stringify(line)}`);
      assert.ok(Object.values(line).some((v) => v === 200 || v === '200'), `the line carries the status: ${JSON.stringify(line)}`);
      const bad = gw.accessLog().filter((l) => l.raw !== undefined);
      assert.deepEqual(bad, [], 'every stdout line is JSON');
    })
  );

  test(
    'a generated X-Request-Id is fresh per request; an insane client id is replaced',
    withLogs(logs, async () => {
      const a = await rawRequest(`${gw.url}/healthz`);
      const b = await rawRequest(`${gw.url}/healthz`);
      assert.ok(a.headers['x-request-id']);
      assert.notEqual(a.headers['x-request-id'], b.headers['x-request-id']);
      const long = 'x'.repeat(300);
      const c = await rawRequest(`${gw.url}/healthz`, { headers: { 'x-request-id': long } });
      assert.ok(c.headers['x-request-id'], 'an id is still sent');
      assert.notEqual(c.headers['x-request-id'], long, 'a 300-character id is not echoed');
    })
  );

  test(
    'the default body limit is 1 MiB: a bigger body → 413 request_too_large, a smaller one is served',
    withLogs(logs, async () => {
      const over = JSON.stringify({ model: 'echo', messages: [{ role: 'user', content: 'x'.repeat(1024 * 1024 + 100) }] });
      const res = await postJSON(`${gw.baseURL}/chat/completions`, over);
      assert.equal(res.status, 413, res.text);
      assert.equal(res.json?.error?.code, 'request_too_large', res.text);
      const under = 'y'.repeat(1000 * 1000);
      const ok = await postJSON(`${gw.baseURL}/chat/completions`, { model: 'echo', messages: [{ role: 'user', content: under }] });
      assert.equal(ok.status, 200);
      assert.equal(ok.json.choices[0].message.content.length, under.length);
    })
  );

  test(
    'keep-alive: 300 sequential requests over one connection',
    withLogs(logs, async () => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      let sockets = 0;
      const orig = agent.createConnection.bind(agent);
      agent.createConnection = (...args) => {
        sockets++;
        return orig(...args);
      };
      try {
        for (let i = 0; i < 300; i++) {
          const res =
            i % 3 === 2
              ? await rawRequest(`${gw.url}/healthz`, { agent })
              : await postJSON(`${gw.baseURL}/chat/completions`, { model: 'echo', messages: [{ role: 'user', content: `n${i}` }] }, { agent });
          assert.equal(res.status, 200, res.text);
          if (i % 3 !== 2) assert.equal(res.json.choices[0].message.content, `n${i}`);
        }
        assert.equal(sockets, 1, 'all requests shared one connection');
      } finally {
        agent.destroy();
      }
    })
  );
});
