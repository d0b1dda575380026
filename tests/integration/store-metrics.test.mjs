// store-metrics.test.mjs — the context store's metrics on the gateway's metrics page:
// operation latency and errors by mcp/backend/op, active conversations, the extra
// metrics.endpoint path, and metrics.enabled: false keeping a store's series out.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { metricSum, parseMetrics, startGateway, withLogs } from '../lib/gateway.mjs';
import { postJSON, waitFor } from '../lib/http.mjs';

const manifests = `
apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: shown}
spec:
  storage: {type: Memory}
  metrics: {enabled: true, endpoint: /store-metrics}
---
apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: hidden}
spec:
  storage: {type: Memory}
  metrics: {enabled: false}
---
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: sm}
spec:
  listener: {port: __PORT__}
  modelTargets: [{name: echo, type: Mock}]
  routes:
  - {name: a, pathPrefix: /a, backends: [{target: echo}], contextRef: {name: shown}}
  - {name: b, pathPrefix: /b, backends: [{target: echo}], contextRef: {name: hidden}}
`;

describe('context store metrics', () => {
  let gw;
  const logs = () => [gw];
  before(async () => {
    gw = await startGateway({ manifests });
  });
  after(async () => gw?.stop());

  const chat = (prefix, id) =>
    postJSON(`${gw.url}${prefix}/chat/completions`,
      { model: 'echo', messages: [{ role: 'user', content: 'hi' }] },
      { headers: { 'x-conversation-id': id } });

  test(
    'operations, active conversations, the extra endpoint, and a store with metrics off',
    withLogs(logs, async () => {
      for (const id of ['c1', 'c2', 'c3']) assert.equal((await chat('/a', id)).status, 200);
      assert.equal((await chat('/a', 'c1')).status, 200);
      assert.equal((await chat('/b', 'x1')).status, 200);
      const shown = { mcp: 'shown', backend: 'memory' };
      // four requests: four reads, four appends
      let s = (await gw.metrics()).samples;
      assert.equal(metricSum(s, 'ctxgate_context_store_op_duration_seconds_count', { ...shown, op: 'get' }), 4);
      assert.equal(metricSum(s, 'ctxgate_context_store_op_duration_seconds_count', { ...shown, op: 'append' }), 4);
      assert.equal(metricSum(s, 'ctxgate_context_store_errors_total', { ...shown, op: 'get' }), 0);
      // the store's size is reported by the workers' upkeep timer (every 5 s, first after 1 s)
      await waitFor(async () => {
        s = (await gw.metrics()).samples;
        return metricSum(s, 'ctxgate_context_active_conversations', shown) === 3;
      }, { timeoutMs: 8000, what: 'active conversations = 3' });
      assert.equal(metricSum(s, 'ctxgate_context_evictions_total', shown), 0);
      // metrics.enabled: false — no series at all for that store
      const text = (await gw.metrics()).text;
      assert.ok(!text.includes('mcp="hidden"'), 'no series for a store with metrics off');
      // metrics.endpoint serves the same page
      const res = await fetch(`${gw.url}/store-metrics`);
      assert.equal(res.status, 200);
      const extra = parseMetrics(await res.text());
      assert.equal(metricSum(extra, 'ctxgate_context_store_op_duration_seconds_count', { ...shown, op: 'append' }), 4);
    })
  );
});
