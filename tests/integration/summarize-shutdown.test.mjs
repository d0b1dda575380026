// summarize-shutdown.test.mjs — a background Summarize request still waiting on its target when
// the gateway gets SIGTERM is cancelled: the process shuts down cleanly instead of waiting for
// --drain-timeout and exiting anyway (its store binding would otherwise never be released).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { startFakeOpenAI } from '../fakes/openai.mjs';
import { startGateway, withLogs } from '../lib/gateway.mjs';
import { postJSON, waitFor } from '../lib/http.mjs';

describe('shutdown with a summary request in flight', () => {
  let fake;
  let gw;
  const logs = () => [gw];

  before(async () => {
    fake = await startFakeOpenAI();
    fake.setDefault({ hang: true }); // the summarizer never answers
    gw = await startGateway({
      extraArgs: ['--drain-timeout', '60'],
      manifests: `
apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: conv}
spec:
  contextStrategy: {type: Summarize, maxContextTokens: 40, summarize: {target: summarizer, triggerTokens: 10}}
---
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: sd}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - {name: echo, type: Mock}
  - {name: summarizer, type: OpenAICompatible, config: {endpoint: "${fake.baseURL}", timeouts: {firstToken: 300, total: 600}}}
  routes:
  - {name: r, backends: [{target: echo}], contextRef: {name: conv}}
`,
    });
  });

  after(async () => {
    await gw?.stop();
    await fake?.close();
  });

  test(
    'SIGTERM cancels the summary request and the process shuts down cleanly',
    withLogs(logs, async () => {
      const long = 'Please remember all of this. '.repeat(20);
      const res = await postJSON(`${gw.baseURL}/chat/completions`,
        { model: 'echo', messages: [{ role: 'user', content: long }] },
        { headers: { 'x-conversation-id': 'c1' } });
      assert.equal(res.status, 200, res.text);
      // the commit crossed triggerTokens: the summary request reached the (silent) summarizer
      await waitFor(() => fake.requests.length === 1, { what: 'the summary request' });
      assert.match(JSON.stringify(fake.requests[0].body.messages), /Please remember all of this/);
      gw.proc.kill('SIGTERM');
      const exit = await gw.exited;
      assert.equal(exit.code, 0, gw.logs());
      const err = gw.stderr();
      assert.match(err, /summary request cancelled by shutdown/);
      assert.match(err, /shut down cleanly/);
      assert.doesNotMatch(err, /exiting anyway/);
    })
  );
});
