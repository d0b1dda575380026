// auth.test.mjs — API-key authentication (Bearer, x-api-key, api-key), per-key model lists,
// GET /models filtered by the caller's key, unknown models, with the `openai` SDK's error classes.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

import { startGateway, withLogs } from '../lib/gateway.mjs';
import { assertOpenAIError, postJSON, rawRequest } from '../lib/http.mjs';

const ALICE = 'sk-alice-all-models-0001';
const BOB = 'sk-bob-cheap-only-0002';
const chatBody = (model) => ({ model, messages: [{ role: 'user', content: 'hi' }] });

describe('API-key authentication', () => {
  let gw;
  const sdk = (apiKey) => new OpenAI({ baseURL: gw.baseURL, apiKey, maxRetries: 0, timeout: 30000 });

  before(async () => {
    gw = await startGateway({
      manifests: `
apiVersion: v1
kind: Secret
metadata: {name: gw-keys}
data:
  alice: ${Buffer.from(ALICE).toString('base64')}
stringData:
  bob: ${BOB}
---
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-auth}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - name: cheap
    aliases: [cheap-alias]
    type: Mock
    config: {mock: {text: cheap answer}}
  - name: premium
    aliases: [premium-alias]
    type: Mock
    config: {mock: {text: premium answer}}
  routes:
  - name: main
    backends: [{target: cheap}, {target: premium}]
  authentication:
    type: APIKey
    apiKeys:
    - {name: alice, secretRef: {name: gw-keys, key: alice}, user: alice, app: it, tenant: t1}
    - {name: bob, secretRef: {name: gw-keys, key: bob}, user: bob, app: it, tenant: t2, models: [cheap]}
`,
    });
  });

  after(async () => {
    if (gw) await gw.stop();
  });

  const logs = () => gw;

  test(
    'a valid key (Bearer, from Secret data in base64) is accepted',
    withLogs(logs, async () => {
      const c = await sdk(ALICE).chat.completions.create(chatBody('premium'));
      assert.equal(c.choices[0].message.content, 'premium answer');
    })
  );

  test(
    'a key from stringData works too, for a model its list allows (and that model\'s alias)',
    withLogs(logs, async () => {
      const c = await sdk(BOB).chat.completions.create(chatBody('cheap'));
      assert.equal(c.choices[0].message.content, 'cheap answer');
      const d = await sdk(BOB).chat.completions.create(chatBody('cheap-alias'));
      assert.equal(d.choices[0].message.content, 'cheap answer');
    })
  );

  test(
    'a credentials header sent twice → 400 duplicate_header naming it, whichever copy is valid (a proxy in front may have checked the other)',
    withLogs(logs, async () => {
      for (const [name, values] of [
        ['authorization', [`Bearer ${ALICE}`, 'Bearer sk-wrong']],
        ['authorization', ['Bearer sk-wrong', `Bearer ${ALICE}`]],
        ['x-api-key', [ALICE, ALICE]],
        ['api-key', [BOB, ALICE]],
      ]) {
        const res = await rawRequest(`${gw.baseURL}/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', [name]: values },
          body: JSON.stringify(chatBody('cheap')),
        });
        const e = assertOpenAIError(assert, res, 400, 'duplicate_header');
        assert.equal(e.param, name);
        assert.equal(e.type, 'invalid_request_error');
      }
      const models = await rawRequest(`${gw.baseURL}/models`, { headers: { authorization: [`Bearer ${ALICE}`, `Bearer ${ALICE}`] } });
      assertOpenAIError(assert, models, 400, 'duplicate_header');
    })
  );

  test(
    'missing key → 401 missing_api_key',
    withLogs(logs, async () => {
      const res = await postJSON(`${gw.baseURL}/chat/completions`, chatBody('cheap'));
      const e = assertOpenAIError(assert, res, 401, 'missing_api_key');
      assert.equal(e.type, 'invalid_request_error'); // OpenAI's type for key errors
      const list = await rawRequest(`${gw.baseURL}/models`);
      assertOpenAIError(assert, list, 401, 'missing_api_key');
    })
  );

  test(
    'wrong key → 401 invalid_api_key (SDK AuthenticationError)',
    withLogs(logs, async () => {
      await assert.rejects(sdk('sk-not-a-real-key').chat.completions.create(chatBody('cheap')), (err) => {
        assert.ok(err instanceof OpenAI.AuthenticationError, `AuthenticationError, got ${err?.constructor?.name}: ${err}`);
        assert.equal(err.status, 401);
        assert.equal(err.code, 'invalid_api_key');
        assert.equal(err.type, 'invalid_request_error');
        return true;
      });
      // a prefix of a real key is not that key
      const res = await postJSON(`${gw.baseURL}/chat/completions`, chatBody('cheap'), {
        headers: { authorization: `Bearer ${ALICE.slice(0, -1)}` },
      });
      assertOpenAIError(assert, res, 401, 'invalid_api_key');
    })
  );

  test(
    "a model outside the key's list → 403 model_not_allowed (SDK PermissionDeniedError)",
    withLogs(logs, async () => {
      for (const model of ['premium', 'premium-alias']) {
        await assert.rejects(sdk(BOB).chat.completions.create(chatBody(model)), (err) => {
          assert.ok(err instanceof OpenAI.PermissionDeniedError, `PermissionDeniedError, got ${err?.constructor?.name}: ${err}`);
          assert.equal(err.status, 403);
          assert.equal(err.code, 'model_not_allowed');
          assert.equal(err.type, 'invalid_request_error');
          return true;
        });
      }
    })
  );

  test(
    'x-api-key and api-key headers are accepted',
    withLogs(logs, async () => {
      const a = await postJSON(`${gw.baseURL}/chat/completions`, chatBody('premium'), { headers: { 'x-api-key': ALICE } });
      assert.equal(a.status, 200, a.text);
      assert.equal(a.json.choices[0].message.content, 'premium answer');
      const b = await postJSON(`${gw.baseURL}/chat/completions`, chatBody('cheap'), { headers: { 'api-key': BOB } });
      assert.equal(b.status, 200, b.text);
      const c = await postJSON(`${gw.baseURL}/chat/completions`, chatBody('premium'), { headers: { 'api-key': BOB } });
      assertOpenAIError(assert, c, 403, 'model_not_allowed');
      const d = await postJSON(`${gw.baseURL}/chat/completions`, chatBody('cheap'), { headers: { 'x-api-key': 'nope' } });
      assertOpenAIError(assert, d, 401, 'invalid_api_key');
    })
  );

  test(
    "GET /models lists what the caller's key may use",
    withLogs(logs, async () => {
      const all = [];
      for await (const m of sdk(ALICE).models.list()) all.push(m);
      assert.deepEqual(all.map((m) => m.id).sort(), ['cheap', 'cheap-alias', 'premium', 'premium-alias']);
      for (const m of all) {
        assert.equal(m.object, 'model');
        assert.equal(m.created, 0);
        assert.equal(m.owned_by, 'ctxgate');
      }
      const bobs = [];
      for await (const m of sdk(BOB).models.list()) bobs.push(m.id);
      assert.deepEqual(bobs.sort(), ['cheap', 'cheap-alias']);
    })
  );

  test(
    'GET /models with a wrong key → 401 (SDK AuthenticationError)',
    withLogs(logs, async () => {
      await assert.rejects(
        (async () => {
          for await (const m of sdk('sk-wrong').models.list()) void m;
        })(),
        (err) => err instanceof OpenAI.AuthenticationError && err.status === 401
      );
    })
  );

  test(
    'an unknown model → 404 model_not_found naming the known ones (SDK NotFoundError)',
    withLogs(logs, async () => {
      await assert.rejects(sdk(ALICE).chat.completions.create(chatBody('gpt-nonexistent')), (err) => {
        assert.ok(err instanceof OpenAI.NotFoundError, `NotFoundError, got ${err?.constructor?.name}: ${err}`);
        assert.equal(err.status, 404);
        assert.equal(err.code, 'model_not_found');
        const m = /^The model 'gpt-nonexistent' does not exist on route 'main'\. Known models: (.+)\.$/.exec(
          err.error?.message ?? ''
        );
        assert.ok(m, `message names the model, the route and the known models: ${err.error?.message}`);
        const known = m[1].split(', ');
        assert.ok(known.includes('cheap') && known.includes('premium'), `known models listed: ${m[1]}`);
        return true;
      });
      const res = await postJSON(`${gw.baseURL}/chat/completions`, chatBody('gpt-nonexistent'), {
        headers: { authorization: `Bearer ${ALICE}` },
      });
      const e = assertOpenAIError(assert, res, 404, 'model_not_found');
      assert.equal(e.type, 'invalid_request_error');
    })
  );
});
