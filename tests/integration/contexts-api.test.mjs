// contexts-api.test.mjs — the context REST API (/v1/contexts[/{id}[/messages]]) on a running
// gateway with Memory stores: every endpoint and its errors, cursor paging, ModelContextProtocol
// selection, security.apiKeyRef (admin key, ?tenant=), security.rbac (Read vs ReadWrite), tenant
// isolation between gateway keys, optimistic versions (409), ReadOnlyMany (403), percent-encoded
// ids, and the round trip with chat completions in both directions.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { startFakeOpenAI } from '../fakes/openai.mjs';
import { startGateway, withLogs } from '../lib/gateway.mjs';
import { assertOpenAIError, postJSON, rawRequest } from '../lib/http.mjs';

const RFC3339_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const PERSONA = 'You are the context API test persona.';

const enc = encodeURIComponent;
const user = (content) => ({ role: 'user', content });

// ---------------------------------------------------------------------------------------------
describe('context API: one ModelContextProtocol, no authentication', () => {
  let fake;
  let gw;
  const api = (path) => `${gw.url}/v1/contexts${path}`;
  const post = (id, body, opts) => postJSON(api(`/${id}/messages`), body, opts);

  before(async () => {
    fake = await startFakeOpenAI();
    gw = await startGateway({
      manifests: `
apiVersion: v1
kind: Secret
metadata: {name: prov}
stringData: {openai: sk-upstream-ctxapi}
---
apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: solo}
spec:
  storage: {type: Memory}
  persona: "${PERSONA}"
---
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-ctxapi-solo}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - {name: echo, type: Mock, config: {modelName: gpt-4o-mini}}
  - name: smart
    type: OpenAI
    config: {endpoint: ${fake.baseURL}, modelName: gpt-4o-mini, apiKeyRef: {name: prov, key: openai}}
  routes:
  - {name: mock, pathPrefix: /v1, backends: [{target: echo}], contextRef: {name: solo}}
  - {name: up, pathPrefix: /up/v1, backends: [{target: smart}], contextRef: {name: solo}}
`,
    });
  });

  after(async () => {
    if (gw) await gw.stop();
    if (fake) await fake.close();
  });

  const logs = () => gw;

  test(
    'an unknown conversation is 404 on every endpoint; the list answers the documented shape',
    withLogs(logs, async () => {
      const list = await rawRequest(api(''));
      assert.equal(list.status, 200, list.text);
      assert.match(list.headers['content-type'], /^application\/json/);
      assert.ok(Array.isArray(list.json.data));
      assert.ok('nextCursor' in list.json);
      for (const path of ['/never-seen', '/never-seen/messages']) {
        const e = assertOpenAIError(assert, await rawRequest(api(path)), 404, 'conversation_not_found');
        assert.match(e.message, /never-seen/);
      }
      assertOpenAIError(assert, await rawRequest(api('/never-seen'), { method: 'DELETE' }), 404, 'conversation_not_found');
    })
  );

  test(
    'POST creates and appends; GET returns the record and the messages; versions count writes',
    withLogs(logs, async () => {
      const id = 'crud-1';
      const first = await post(id, { messages: [user('hello'), { role: 'assistant', content: 'hi there' }] });
      assert.equal(first.status, 200, first.text);
      assert.deepEqual(first.json, { id, version: 1, turns: 2 });

      const second = await post(id, { messages: [user('again')], expectedVersion: 1 });
      assert.equal(second.status, 200, second.text);
      assert.deepEqual(second.json, { id, version: 2, turns: 3 });

      const rec = await rawRequest(api(`/${id}`));
      assert.equal(rec.status, 200, rec.text);
      assert.equal(rec.json.id, id);
      assert.equal(rec.json.version, 2);
      assert.equal(rec.json.persona, PERSONA, "the MCP's persona is recorded with the conversation");
      assert.equal(rec.json.summary, null);
      assert.deepEqual(rec.json.metadata, {});
      assert.match(rec.json.createdAt, RFC3339_MS);
      assert.match(rec.json.updatedAt, RFC3339_MS);
      assert.deepEqual(
        rec.json.messages.map((m) => [m.role, m.content]),
        [
          ['user', 'hello'],
          ['assistant', 'hi there'],
          ['user', 'again'],
        ]
      );
      for (const m of rec.json.messages) assert.ok(Number.isInteger(m.ts) && m.ts > 1.6e12, `ts is Unix ms: ${m.ts}`);

      const msgs = await rawRequest(api(`/${id}/messages`));
      assert.equal(msgs.status, 200, msgs.text);
      assert.deepEqual(Object.keys(msgs.json).sort(), ['id', 'messages', 'version']);
      assert.equal(msgs.json.version, 2);
      assert.deepEqual(msgs.json.messages, rec.json.messages);

      const listed = (await rawRequest(api('?limit=1000'))).json.data.find((x) => x.id === id);
      assert.ok(listed, 'the conversation is listed');
      assert.equal(listed.turns, 3);
      assert.match(listed.createdAt, RFC3339_MS);
      assert.match(listed.updatedAt, RFC3339_MS);
      assert.ok(listed.updatedAt >= listed.createdAt);
    })
  );

  test(
    'tool calls and tool_call_id survive the round trip',
    withLogs(logs, async () => {
      const msgs = [
        user('weather?'),
        {
          role: 'assistant',
          content: null,
          tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'weather', arguments: '{"city":"Oslo"}' } }],
        },
        { role: 'tool', tool_call_id: 'call_1', content: '3 degrees' },
      ];
      const res = await post('tools-1', { messages: msgs });
      assert.equal(res.status, 200, res.text);
      const got = (await rawRequest(api('/tools-1/messages'))).json.messages.map(({ ts, ...m }) => m);
      assert.deepEqual(got, msgs);
    })
  );

  test(
    'expectedVersion: a mismatch is 409 conversation_conflict and writes nothing; 0 means "must not exist"',
    withLogs(logs, async () => {
      const id = 'versions-1';
      assert.equal((await post(id, { messages: [user('one')], expectedVersion: 0 })).status, 200);
      const again0 = await post(id, { messages: [user('dup')], expectedVersion: 0 });
      assertOpenAIError(assert, again0, 409, 'conversation_conflict');
      const stale = await post(id, { messages: [user('stale')], expectedVersion: 7 });
      const e = assertOpenAIError(assert, stale, 409, 'conversation_conflict');
      assert.equal(e.param, 'expectedVersion');
      const rec = (await rawRequest(api(`/${id}`))).json;
      assert.equal(rec.version, 1, 'a conflict writes nothing');
      assert.deepEqual(rec.messages.map((m) => m.content), ['one']);
      const ok = await post(id, { messages: [user('two')], expectedVersion: 1 });
      assert.deepEqual(ok.json, { id, version: 2, turns: 2 });
    })
  );

  test(
    'bad POST bodies are 400 naming the field',
    withLogs(logs, async () => {
      const url = api('/bad-body/messages');
      const cases = [
        ['{not json', 'invalid_json', null],
        ['[1,2]', 'invalid_type', null],
        [{}, 'missing_required_parameter', 'messages'],
        [{ messages: [] }, 'invalid_value', 'messages'],
        [{ messages: 'hi' }, 'invalid_value', 'messages'],
        [{ messages: ['hi'] }, 'invalid_value', 'messages'],
        [{ messages: [{ content: 'no role' }] }, 'invalid_value', 'messages'],
        [{ messages: [{ role: 'robot', content: 'x' }] }, 'invalid_value', 'messages'],
        [{ messages: [user('x')], expectedVersion: -1 }, 'invalid_value', 'expectedVersion'],
        [{ messages: [user('x')], expectedVersion: '1' }, 'invalid_value', 'expectedVersion'],
        [{ messages: [user('x')], expectedVersion: 1.5 }, 'invalid_value', 'expectedVersion'],
      ];
      for (const [body, code, param] of cases) {
        const res = await postJSON(url, body);
        const e = assertOpenAIError(assert, res, 400, code);
        assert.equal(e.param, param, `param for ${JSON.stringify(body)}: ${res.text}`);
      }
      assertOpenAIError(assert, await rawRequest(api('/bad-body')), 404, 'conversation_not_found');
    })
  );

  test(
    'DELETE answers 204 and the conversation is gone',
    withLogs(logs, async () => {
      assert.equal((await post('del-1', { messages: [user('bye')] })).status, 200);
      const del = await rawRequest(api('/del-1'), { method: 'DELETE' });
      assert.equal(del.status, 204, del.text);
      assert.equal(del.text, '');
      assertOpenAIError(assert, await rawRequest(api('/del-1')), 404, 'conversation_not_found');
      assertOpenAIError(assert, await rawRequest(api('/del-1'), { method: 'DELETE' }), 404, 'conversation_not_found');
      assert.ok(!(await rawRequest(api('?limit=1000'))).json.data.some((x) => x.id === 'del-1'));
    })
  );

  test(
    'the mcp parameter may be omitted with one ModelContextProtocol; an unknown one is 404 naming it',
    withLogs(logs, async () => {
      assert.equal((await rawRequest(api('?mcp=solo'))).status, 200);
      const e = assertOpenAIError(assert, await rawRequest(api('?mcp=nope')), 404, 'mcp_not_found');
      assert.equal(e.param, 'mcp');
      assert.match(e.message, /nope/);
      assert.match(e.message, /solo/, 'the known ones are named');
    })
  );

  test(
    'limit must be an integer from 1 to 1000',
    withLogs(logs, async () => {
      for (const bad of ['0', '1001', 'abc', '-1', '1.5', '', '10x', '+5']) {
        const e = assertOpenAIError(assert, await rawRequest(api(`?limit=${enc(bad)}`)), 400, 'invalid_value');
        assert.equal(e.param, 'limit', `limit=${bad}`);
      }
      assert.equal((await rawRequest(api('?limit=1'))).status, 200);
      assert.equal((await rawRequest(api('?limit=1000'))).status, 200);
    })
  );

  test(
    'ids in the path are percent-decoded and validated like X-Conversation-Id',
    withLogs(logs, async () => {
      const id = 'order/42?x=1&y#z%';
      const res = await post(enc(id), { messages: [user('encoded')] });
      assert.equal(res.status, 200, res.text);
      assert.equal(res.json.id, id);
      const rec = await rawRequest(api(`/${enc(id)}`));
      assert.equal(rec.status, 200, rec.text);
      assert.equal(rec.json.id, id);
      assert.ok((await rawRequest(api('?limit=1000'))).json.data.some((x) => x.id === id));

      // the same conversation through chat, by its raw id
      const chat = await postJSON(
        `${gw.baseURL}/chat/completions`,
        { model: 'echo', messages: [user('next')] },
        { headers: { 'x-conversation-id': id } }
      );
      assert.equal(chat.status, 200, chat.text);
      assert.equal(chat.headers['x-context-turns'], '1');

      const long = 'L'.repeat(256);
      assert.equal((await post(long, { messages: [user('max')] })).status, 200, '256 bytes are allowed');
      for (const bad of ['a%20b', 'a%ZZ', 'a%0', 'tab%09', 'nul%00x', 'L'.repeat(257), '%C3%A9t%C3%A9']) {
        const r = await rawRequest(api(`/${bad}`));
        const e = assertOpenAIError(assert, r, 400, 'invalid_conversation');
        assert.equal(e.param, 'id', bad);
        assertOpenAIError(assert, await post(bad, { messages: [user('x')] }), 400, 'invalid_conversation');
      }
    })
  );

  test(
    'wrong methods are 405 with Allow; unknown sub-paths are 404; the API never falls into a /v1 route',
    withLogs(logs, async () => {
      const cases = [
        ['', 'POST', 'GET'],
        ['', 'DELETE', 'GET'],
        ['/x', 'POST', 'GET, DELETE'],
        ['/x', 'PUT', 'GET, DELETE'],
        ['/x/messages', 'DELETE', 'GET, POST'],
        ['/x/messages', 'PATCH', 'GET, POST'],
      ];
      for (const [path, method, allow] of cases) {
        const res = await rawRequest(api(path), { method, body: method === 'GET' ? undefined : '{}' });
        assertOpenAIError(assert, res, 405, 'method_not_allowed');
        assert.equal(res.headers.allow, allow, `${method} ${path}`);
      }
      for (const path of ['/x/other', '/x/messages/y', '/', '//messages']) {
        assertOpenAIError(assert, await rawRequest(api(path)), 404, 'unknown_url');
      }
      // /v1/contextsX is not the API: it is an ordinary unknown path under the /v1 route
      assertOpenAIError(assert, await rawRequest(`${gw.url}/v1/contextsX`), 404, 'unknown_url');

      const before = gw.accessLog().length;
      await rawRequest(api('/never-logged-before'), { headers: { 'x-request-id': 'ctxapi-log-1' } });
      const line = await (async () => {
        for (let i = 0; i < 100; i++) {
          const l = gw.accessLog().slice(before).find((x) => x.request_id === 'ctxapi-log-1' || x.requestId === 'ctxapi-log-1');
          if (l) return l;
          await new Promise((r) => setTimeout(r, 20));
        }
        return null;
      })();
      assert.ok(line, `an access-log line for the API request:\n${gw.stdout()}`);
      assert.equal(line.status, 404);
      assert.ok(!line.route, `no route: ${JSON.stringify(line)}`);
    })
  );

  test(
    'a conversation written by chat completions is visible through the API',
    withLogs(logs, async () => {
      const id = 'chat-to-api';
      for (const text of ['first question', 'second question']) {
        const res = await postJSON(
          `${gw.baseURL}/chat/completions`,
          { model: 'echo', messages: [{ role: 'system', content: 'not stored' }, user(text)] },
          { headers: { 'x-conversation-id': id } }
        );
        assert.equal(res.status, 200, res.text);
      }
      const rec = (await rawRequest(api(`/${id}`))).json;
      assert.equal(rec.version, 2);
      assert.deepEqual(
        rec.messages.map((m) => [m.role, m.content]),
        [
          ['user', 'first question'],
          ['assistant', 'first question'],
          ['user', 'second question'],
          ['assistant', 'second question'],
        ]
      );
    })
  );

  test(
    'messages posted through the API are injected into the next chat request',
    withLogs(logs, async () => {
      const id = 'api-to-chat';
      const seeded = [user('my name is Ada'), { role: 'assistant', content: 'Hello Ada' }];
      assert.equal((await post(id, { messages: seeded })).status, 200);

      const mock = await postJSON(
        `${gw.baseURL}/chat/completions`,
        { model: 'echo', messages: [user('what is my name?')] },
        { headers: { 'x-conversation-id': id } }
      );
      assert.equal(mock.status, 200, mock.text);
      assert.equal(mock.headers['x-conversation-id'], id);
      assert.equal(mock.headers['x-context-turns'], '2', 'the two posted messages were sent along');

      fake.reset();
      const up = await postJSON(
        `${gw.url}/up/v1/chat/completions`,
        { model: 'smart', messages: [user('and my surname?')] },
        { headers: { 'x-conversation-id': id } }
      );
      assert.equal(up.status, 200, up.text);
      const sent = fake.chatRequests()[0].body.messages;
      assert.deepEqual(
        sent.map((m) => [m.role, m.content]),
        [
          ['system', PERSONA],
          ['user', 'my name is Ada'],
          ['assistant', 'Hello Ada'],
          ['user', 'what is my name?'],
          ['assistant', 'what is my name?'],
          ['user', 'and my surname?'],
        ]
      );
      const after = (await rawRequest(api(`/${id}/messages`))).json;
      assert.equal(after.version, 3);
      assert.equal(after.messages.at(-1).content, 'reply to: and my surname?');
    })
  );
});

// ---------------------------------------------------------------------------------------------
describe('context API: several ModelContextProtocols, API keys, rbac, tenants, admin key', () => {
  let gw;
  const KEYS = {
    alice: 'sk-ctx-alice-111', // app support-bot, tenant t1 (ReadWrite)
    bob: 'sk-ctx-bob-222', // app support-bot, tenant t2 (ReadWrite)
    dash: 'sk-ctx-dash-333', // app dashboard, tenant t1 (Read)
    stranger: 'sk-ctx-stranger-444', // app other, tenant t1 (not in rbac)
    admin: 'sk-ctx-admin-999', // security.apiKeyRef of ctx-admin (not a gateway key)
  };
  const bearer = (k) => ({ authorization: `Bearer ${KEYS[k]}` });
  const api = (path, mcp, extra = '') => `${gw.url}/v1/contexts${path}?mcp=${mcp}${extra}`;

  before(async () => {
    gw = await startGateway({
      manifests: `
apiVersion: v1
kind: Secret
metadata: {name: gw-keys}
stringData: {alice: ${KEYS.alice}, bob: ${KEYS.bob}, dash: ${KEYS.dash}, stranger: ${KEYS.stranger}}
---
apiVersion: v1
kind: Secret
metadata: {name: ctx-admin-key}
stringData: {key: ${KEYS.admin}}
---
apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: ctx-main}
spec:
  storage: {type: Memory}
  security:
    rbac:
    - {apps: [support-bot], access: ReadWrite}
    - {apps: [dashboard, support-bot], access: Read}
---
apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: ctx-admin}
spec:
  storage: {type: Memory}
  security:
    apiKeyRef: {name: ctx-admin-key, key: key}
---
apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: ctx-ro}
spec:
  storage: {type: Memory}
  interactionPatterns: {readWriteMode: ReadOnlyMany}
---
apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: ctx-open}
spec:
  storage: {type: Memory}
---
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-ctxapi-multi}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - {name: echo, type: Mock}
  routes:
  - {name: main, pathPrefix: /v1, backends: [{target: echo}], contextRef: {name: ctx-main}}
  - {name: adm, pathPrefix: /adm/v1, backends: [{target: echo}], contextRef: {name: ctx-admin}}
  authentication:
    type: APIKey
    apiKeys:
    - {name: alice, secretRef: {name: gw-keys, key: alice}, app: support-bot, tenant: t1}
    - {name: bob, secretRef: {name: gw-keys, key: bob}, app: support-bot, tenant: t2}
    - {name: dash, secretRef: {name: gw-keys, key: dash}, app: dashboard, tenant: t1}
    - {name: stranger, secretRef: {name: gw-keys, key: stranger}, app: other, tenant: t1}
`,
    });
  });

  after(async () => {
    if (gw) await gw.stop();
  });

  const logs = () => gw;

  test(
    'with several ModelContextProtocols, mcp is required (400 listing them); unknown is 404',
    withLogs(logs, async () => {
      const e = assertOpenAIError(
        assert,
        await rawRequest(`${gw.url}/v1/contexts`, { headers: bearer('alice') }),
        400,
        'missing_required_parameter'
      );
      assert.equal(e.param, 'mcp');
      for (const name of ['ctx-main', 'ctx-admin', 'ctx-ro', 'ctx-open']) assert.ok(e.message.includes(name), e.message);
      const u = assertOpenAIError(assert, await rawRequest(api('', 'ghost'), { headers: bearer('alice') }), 404, 'mcp_not_found');
      assert.match(u.message, /ghost/);
      assert.match(u.message, /ctx-open/);
    })
  );

  test(
    "without apiKeyRef the gateway's authentication applies",
    withLogs(logs, async () => {
      assertOpenAIError(assert, await rawRequest(api('', 'ctx-open')), 401, 'missing_api_key');
      assertOpenAIError(assert, await rawRequest(api('', 'ctx-open'), { headers: { authorization: 'Bearer sk-wrong' } }), 401, 'invalid_api_key');
      assert.equal((await rawRequest(api('', 'ctx-open'), { headers: { 'x-api-key': KEYS.stranger } })).status, 200);
      assert.equal((await rawRequest(api('', 'ctx-open'), { headers: { 'api-key': KEYS.stranger } })).status, 200);
      // no rbac entries: every authenticated caller reads and writes
      const w = await postJSON(api('/open-1/messages', 'ctx-open'), { messages: [user('x')] }, { headers: bearer('stranger') });
      assert.equal(w.status, 200, w.text);
      assert.equal((await rawRequest(api('/open-1', 'ctx-open'), { method: 'DELETE', headers: bearer('stranger') })).status, 204);
    })
  );

  test(
    'rbac: Read may GET but not POST or DELETE; an app not listed gets nothing; ReadWrite wins for an app in both entries',
    withLogs(logs, async () => {
      const w = await postJSON(api('/rbac-1/messages', 'ctx-main'), { messages: [user('from the bot')] }, { headers: bearer('alice') });
      assert.equal(w.status, 200, w.text);

      // dashboard (Read, same tenant t1)
      assert.equal((await rawRequest(api('', 'ctx-main'), { headers: bearer('dash') })).status, 200);
      const rec = await rawRequest(api('/rbac-1', 'ctx-main'), { headers: bearer('dash') });
      assert.equal(rec.status, 200, rec.text);
      assert.equal(rec.json.messages[0].content, 'from the bot');
      assert.equal((await rawRequest(api('/rbac-1/messages', 'ctx-main'), { headers: bearer('dash') })).status, 200);
      const denied = await postJSON(api('/rbac-1/messages', 'ctx-main'), { messages: [user('x')] }, { headers: bearer('dash') });
      const e = assertOpenAIError(assert, denied, 403, 'context_access_denied');
      assert.equal(e.type, 'invalid_request_error');
      assert.match(e.message, /dashboard/);
      assertOpenAIError(assert, await rawRequest(api('/rbac-1', 'ctx-main'), { method: 'DELETE', headers: bearer('dash') }), 403, 'context_access_denied');

      // other (not listed)
      for (const [method, path] of [
        ['GET', ''],
        ['GET', '/rbac-1'],
        ['GET', '/rbac-1/messages'],
        ['DELETE', '/rbac-1'],
      ]) {
        assertOpenAIError(assert, await rawRequest(api(path, 'ctx-main'), { method, headers: bearer('stranger') }), 403, 'context_access_denied');
      }
      assertOpenAIError(
        assert,
        await postJSON(api('/rbac-1/messages', 'ctx-main'), { messages: [user('x')] }, { headers: bearer('stranger') }),
        403,
        'context_access_denied'
      );

      const after = (await rawRequest(api('/rbac-1', 'ctx-main'), { headers: bearer('alice') })).json;
      assert.equal(after.version, 1, 'denied writes changed nothing');
    })
  );

  test(
    'tenants: two keys with different tenants see different conversations under the same id',
    withLogs(logs, async () => {
      const id = 'shared-id';
      assert.equal((await postJSON(api(`/${id}/messages`, 'ctx-main'), { messages: [user('alice says')] }, { headers: bearer('alice') })).status, 200);
      assert.equal((await postJSON(api(`/${id}/messages`, 'ctx-main'), { messages: [user('bob says')] }, { headers: bearer('bob') })).status, 200);
      const a = (await rawRequest(api(`/${id}`, 'ctx-main'), { headers: bearer('alice') })).json;
      const b = (await rawRequest(api(`/${id}`, 'ctx-main'), { headers: bearer('bob') })).json;
      assert.deepEqual(a.messages.map((m) => m.content), ['alice says']);
      assert.deepEqual(b.messages.map((m) => m.content), ['bob says']);
      assert.equal(a.version, 1);
      assert.equal(b.version, 1);

      const bobOnly = await postJSON(api('/bob-only/messages', 'ctx-main'), { messages: [user('b')] }, { headers: bearer('bob') });
      assert.equal(bobOnly.status, 200);
      const aliceList = (await rawRequest(api('', 'ctx-main', '&limit=1000'), { headers: bearer('alice') })).json.data.map((x) => x.id);
      assert.ok(!aliceList.includes('bob-only'), 'a tenant never lists another tenant\'s conversations');
      assertOpenAIError(assert, await rawRequest(api('/bob-only', 'ctx-main'), { headers: bearer('alice') }), 404, 'conversation_not_found');

      assert.equal((await rawRequest(api(`/${id}`, 'ctx-main'), { method: 'DELETE', headers: bearer('alice') })).status, 204);
      assert.equal((await rawRequest(api(`/${id}`, 'ctx-main'), { headers: bearer('bob') })).status, 200, "bob's copy survives alice's delete");

      // a gateway key may not name another tenant; naming its own is fine
      const e = assertOpenAIError(assert, await rawRequest(api('', 'ctx-main', '&tenant=t2'), { headers: bearer('alice') }), 403, 'context_access_denied');
      assert.equal(e.param, 'tenant');
      assert.equal((await rawRequest(api('', 'ctx-main', '&tenant=t1'), { headers: bearer('alice') })).status, 200);
    })
  );

  test(
    'apiKeyRef: that key is required (401 without or with a gateway key) and grants read and write',
    withLogs(logs, async () => {
      assertOpenAIError(assert, await rawRequest(api('', 'ctx-admin')), 401, 'missing_api_key');
      assertOpenAIError(assert, await rawRequest(api('', 'ctx-admin'), { headers: bearer('alice') }), 401, 'invalid_api_key');
      assertOpenAIError(assert, await rawRequest(api('', 'ctx-admin'), { headers: { authorization: `Bearer ${KEYS.admin}x` } }), 401, 'invalid_api_key');
      for (const headers of [bearer('admin'), { 'x-api-key': KEYS.admin }, { 'api-key': KEYS.admin }]) {
        assert.equal((await rawRequest(api('', 'ctx-admin'), { headers })).status, 200, JSON.stringify(Object.keys(headers)));
      }
      const w = await postJSON(api('/adm-1/messages', 'ctx-admin'), { messages: [user('admin wrote')] }, { headers: bearer('admin') });
      assert.equal(w.status, 200, w.text);
      assert.equal((await rawRequest(api('/adm-1', 'ctx-admin'), { method: 'DELETE', headers: bearer('admin') })).status, 204);
    })
  );

  test(
    'apiKeyRef: ?tenant= names the tenant (default: the default tenant); a chat conversation of tenant t1 is readable by the admin',
    withLogs(logs, async () => {
      const w = await postJSON(api('/acme-1/messages', 'ctx-admin', '&tenant=acme'), { messages: [user('for acme')] }, { headers: bearer('admin') });
      assert.equal(w.status, 200, w.text);
      assertOpenAIError(assert, await rawRequest(api('/acme-1', 'ctx-admin'), { headers: bearer('admin') }), 404, 'conversation_not_found');
      const r = await rawRequest(api('/acme-1', 'ctx-admin', '&tenant=acme'), { headers: bearer('admin') });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(
        (await rawRequest(api('', 'ctx-admin', '&tenant=acme'), { headers: bearer('admin') })).json.data.map((x) => x.id),
        ['acme-1']
      );

      const chat = await postJSON(
        `${gw.url}/adm/v1/chat/completions`,
        { model: 'echo', messages: [user('from alice via chat')] },
        { headers: { ...bearer('alice'), 'x-conversation-id': 'alice-chat' } }
      );
      assert.equal(chat.status, 200, chat.text);
      const seen = await rawRequest(api('/alice-chat/messages', 'ctx-admin', '&tenant=t1'), { headers: bearer('admin') });
      assert.equal(seen.status, 200, seen.text);
      assert.deepEqual(seen.json.messages.map((m) => m.content), ['from alice via chat', 'from alice via chat']);
      assertOpenAIError(assert, await rawRequest(api('/alice-chat', 'ctx-admin'), { headers: bearer('admin') }), 404, 'conversation_not_found');

      const bad = assertOpenAIError(assert, await rawRequest(api('', 'ctx-admin', '&tenant=a:b'), { headers: bearer('admin') }), 400, 'invalid_value');
      assert.equal(bad.param, 'tenant');
    })
  );

  test(
    'paging: 25 conversations, limit 10 → 3 pages, every id exactly once, nextCursor null at the end',
    withLogs(logs, async () => {
      const ids = Array.from({ length: 25 }, (_, i) => `page-${String(i).padStart(2, '0')}-${i % 3 ? 'x' : 'y/z'}`);
      for (const id of ids) {
        const res = await postJSON(api(`/${enc(id)}/messages`, 'ctx-admin', '&tenant=paging'), { messages: [user(id)] }, { headers: bearer('admin') });
        assert.equal(res.status, 200, res.text);
      }
      const pages = [];
      let cursor = null;
      do {
        const extra = `&tenant=paging&limit=10${cursor ? `&cursor=${enc(cursor)}` : ''}`;
        const res = await rawRequest(api('', 'ctx-admin', extra), { headers: bearer('admin') });
        assert.equal(res.status, 200, res.text);
        pages.push(res.json.data);
        cursor = res.json.nextCursor;
        assert.ok(cursor === null || typeof cursor === 'string');
        assert.ok(pages.length <= 5, 'paging terminates');
      } while (cursor);
      assert.deepEqual(pages.map((p) => p.length), [10, 10, 5]);
      const seen = pages.flat().map((x) => x.id);
      assert.equal(new Set(seen).size, seen.length, 'no id twice');
      assert.deepEqual([...seen].sort(), [...ids].sort());
      for (const item of pages.flat()) assert.equal(item.turns, 1);
    })
  );

  test(
    'ReadOnlyMany: POST is 403 context_read_only; reading works',
    withLogs(logs, async () => {
      const res = await postJSON(api('/ro-1/messages', 'ctx-ro'), { messages: [user('x')] }, { headers: bearer('alice') });
      const e = assertOpenAIError(assert, res, 403, 'context_read_only');
      assert.equal(e.type, 'invalid_request_error');
      assert.equal((await rawRequest(api('', 'ctx-ro'), { headers: bearer('alice') })).status, 200);
      assertOpenAIError(assert, await rawRequest(api('/ro-1', 'ctx-ro'), { headers: bearer('alice') }), 404, 'conversation_not_found');
    })
  );
});
