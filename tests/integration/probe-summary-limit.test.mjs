// probe-summary-limit.test.mjs — the background summary request of a Summarize store is bounded
// by its target's maxResponseBytes like every other answer: a summarizer that answers more is
// broken off as soon as the answer grows past the limit (nothing is held beyond it), no summary
// is stored, a warning says why, and the next turn retries. Found by the issue-6 verification
// (defect 15's bound did not cover summaries).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { startFakeOpenAI } from '../fakes/openai.mjs';
import { startGateway, withLogs } from '../lib/gateway.mjs';
import { postJSON, rawRequest, waitFor } from '../lib/http.mjs';

describe('the summary request and maxResponseBytes', () => {
  let chatFake;
  let sumFake;
  let gw;

  before(async () => {
    chatFake = await startFakeOpenAI();
    sumFake = await startFakeOpenAI({ default: { bigBytes: 32 * 1024 * 1024, noLength: true } }); // more than loopback socket buffers hold, so a read to the end would show
    gw = await startGateway({
      workers: 1,
      manifests: `
apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: ctx}
spec:
  storage: {type: Memory}
  contextStrategy: {type: Summarize, maxContextTokens: 2000, lastN: 1, summarize: {target: summarizer, triggerTokens: 30}}
---
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-probe-summary-limit}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - {name: chat, type: OpenAI, config: {endpoint: "${chatFake.baseURL}", modelName: gpt-4o-mini}}
  - {name: summarizer, type: OpenAI, config: {endpoint: "${sumFake.baseURL}", modelName: gpt-4o-mini, maxResponseBytes: 65536}}
  routes:
  - {name: ctx, backends: [{target: chat}], contextRef: {name: ctx}}
  authentication: {type: None}
`,
    });
  });

  after(async () => {
    if (gw) await gw.stop();
    if (chatFake) await chatFake.close();
    if (sumFake) await sumFake.close();
  });

  test(
    'a 32 MiB summary from a target limited to 64 KiB: broken off, not stored, the next turn retries',
    withLogs(
      () => gw,
      async () => {
        const conv = `sumlimit-${process.pid}`;
        const turn = async (i) => {
          const res = await postJSON(
            `${gw.baseURL}/chat/completions`,
            { model: 'chat', messages: [{ role: 'user', content: `turn ${i}: ${'many words here '.repeat(10)}` }] },
            { headers: { 'x-conversation-id': conv } }
          );
          assert.equal(res.status, 200, res.text);
        };
        await turn(1);
        await turn(2);
        await waitFor(() => sumFake.chatRequests().length >= 1, { what: 'a summary request' });
        const first = sumFake.chatRequests()[0];
        await first.closed;
        assert.ok(first.clientClosedEarly, 'the gateway broke the summary answer off');
        assert.ok(first.bigSent < 32 * 1024 * 1024, `not read to its end (${first.bigSent} bytes sent)`);
        await waitFor(() => /larger than its maxResponseBytes \(65536 bytes\); the next turn retries/.test(gw.stderr()), {
          what: 'the warning',
        });
        const rec = await rawRequest(`${gw.url}/v1/contexts/${conv}`);
        assert.equal(rec.status, 200, rec.text);
        assert.equal(rec.json.summary, null, 'no summary stored');
        await turn(3);
        await waitFor(() => sumFake.chatRequests().length >= 2, { what: 'the next turn retrying the summary' });
        const res = await rawRequest(`${gw.url}/healthz`);
        assert.equal(res.status, 200);
      }
    )
  );
});
