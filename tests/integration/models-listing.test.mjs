// models-listing.test.mjs — GET {prefix}/models lists exactly the models a chat request on that
// prefix is answered for: every route of the prefix whose match.headers the request carries
// (a route with match.models, a shadowed catch-all, a header-filtered route), aliases included,
// filtered by the key's `models`. Checked both ways: each listed id answers POST
// chat/completions, and each name the configuration knows that is not listed does not.
// Also the quickstart (examples/quickstart/) as shipped.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

import { REPO_ROOT, startGateway, withLogs } from '../lib/gateway.mjs';
import { postJSON, rawRequest } from '../lib/http.mjs';

const FULL = 'sk-models-full-0001';
const LIMITED = 'sk-models-limited-0002';
const chatBody = (model) => ({ model, messages: [{ role: 'user', content: 'hi' }] });

// every name the configuration below could answer to: target names, aliases, match.models
const ALL_NAMES = ['pool', 'a', 'b', 'team', 'team-alias', 'demo', 'gpt-4o-mini', 'hello', 'shadowed', 'wzero'];

async function listModels(gw, prefix, headers) {
  const res = await rawRequest(`${gw.url}${prefix}/models`, { headers });
  return res;
}

async function chatStatus(gw, prefix, model, headers) {
  const res = await postJSON(`${gw.url}${prefix}/chat/completions`, chatBody(model), { headers });
  return res;
}

// Lists, then asks for every known name: listed ⇔ answered with 200.
async function assertListingMatchesChat(gw, prefix, headers, names) {
  const list = await listModels(gw, prefix, headers);
  assert.equal(list.status, 200, list.text);
  assert.equal(list.json.object, 'list');
  const ids = list.json.data.map((m) => m.id);
  assert.equal(new Set(ids).size, ids.length, `no id twice: ${ids}`);
  for (const id of ids) {
    const res = await chatStatus(gw, prefix, id, headers);
    assert.equal(res.status, 200, `listed model '${id}' answers chat/completions: ${res.status} ${res.text}`);
  }
  for (const name of names) {
    if (ids.includes(name)) continue;
    const res = await chatStatus(gw, prefix, name, headers);
    assert.notEqual(res.status, 200, `'${name}' answers chat/completions, so it must be listed (listed: ${ids})`);
    assert.ok([403, 404].includes(res.status), `'${name}': ${res.status} ${res.text}`);
  }
  return ids;
}

describe('GET /models lists every reachable model, and only those', () => {
  let gw;

  before(async () => {
    const mock = (name, extra = '') => `  - {name: ${name}, type: Mock${extra}, config: {mock: {text: ${name} answers}}}`;
    gw = await startGateway({
      manifests: `
apiVersion: v1
kind: Secret
metadata: {name: keys}
stringData: {full: ${FULL}, limited: ${LIMITED}}
---
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-models}
spec:
  listener: {port: __PORT__}
  modelTargets:
${mock('a')}
${mock('b')}
${mock('team', ', aliases: [team-alias]')}
${mock('demo', ', aliases: [gpt-4o-mini]')}
${mock('hello')}
${mock('shadowed')}
  routes:
  # a virtual model: only "pool" passes this route's filter, "a" and "b" do not
  - name: pool
    pathPrefix: /v1
    match: {models: [pool]}
    backends: [{target: a}, {target: b}]
  # weighted with only weight 0 for the limited key's target: never drawn
  - name: wzero
    pathPrefix: /v1
    match: {models: [wzero]}
    strategy: Weighted
    backends: [{target: hello, weight: 0}, {target: b, weight: 1}]
  # reachable only with x-team: billing; then it takes every model the routes above do not
  - name: team
    pathPrefix: /v1
    match: {headers: [{name: x-team, value: billing}]}
    backends: [{target: team}]
  - name: default
    pathPrefix: /v1
    backends: [{target: demo}, {target: hello}]
  # shadowed: "default" (no filters) takes every request first, "shadowed" included
  - name: shadow
    pathPrefix: /v1
    match: {models: [shadowed]}
    backends: [{target: shadowed}]
  # another prefix: its own list
  - name: other
    pathPrefix: /other/v1
    backends: [{target: a}]
  - name: gated
    pathPrefix: /gated/v1
    match: {headers: [{name: x-team, value: billing}]}
    backends: [{target: team}]
  authentication:
    type: APIKey
    apiKeys:
    - {name: full, secretRef: {name: keys, key: full}}
    - {name: limited, secretRef: {name: keys, key: limited}, models: [a, demo, hello]}
`,
    });
  });

  after(async () => {
    if (gw) await gw.stop();
  });

  const logs = () => gw;
  const auth = (key, extra = {}) => ({ authorization: `Bearer ${key}`, ...extra });

  test(
    'a route with match.models does not hide the other routes of the prefix (quickstart demo/hello)',
    withLogs(logs, async () => {
      const ids = await assertListingMatchesChat(gw, '/v1', auth(FULL), ALL_NAMES);
      assert.deepEqual(ids.sort(), ['demo', 'gpt-4o-mini', 'hello', 'pool', 'wzero']);
    })
  );

  test(
    "the key's models filter the list, virtual models by the backends the key may use",
    withLogs(logs, async () => {
      const ids = await assertListingMatchesChat(gw, '/v1', auth(LIMITED), ALL_NAMES);
      // pool: via a; wzero: hello has weight 0 and b is not the key's, so it is not listed
      assert.deepEqual(ids.sort(), ['demo', 'gpt-4o-mini', 'hello', 'pool']);
    })
  );

  test(
    "the request's headers decide which header-filtered routes count",
    withLogs(logs, async () => {
      // with x-team: billing the team route takes every name the filtered routes above leave,
      // so demo and hello are not reachable any more and not listed
      const ids = await assertListingMatchesChat(gw, '/v1', auth(FULL, { 'x-team': 'billing' }), ALL_NAMES);
      assert.deepEqual(ids.sort(), ['pool', 'team', 'team-alias', 'wzero']);
      const other = await assertListingMatchesChat(gw, '/v1', auth(FULL, { 'x-team': 'sales' }), ALL_NAMES);
      assert.deepEqual(other.sort(), ['demo', 'gpt-4o-mini', 'hello', 'pool', 'wzero']);
    })
  );

  test(
    'each prefix lists its own routes; no route accepting the headers → 404 route_not_found',
    withLogs(logs, async () => {
      assert.deepEqual(await assertListingMatchesChat(gw, '/other/v1', auth(FULL), ALL_NAMES), ['a']);
      assert.deepEqual(await assertListingMatchesChat(gw, '/gated/v1', auth(FULL, { 'x-team': 'billing' }), ALL_NAMES), [
        'team',
        'team-alias',
      ]);
      const res = await listModels(gw, '/gated/v1', auth(FULL));
      assert.equal(res.status, 404, res.text);
      assert.equal(res.json.error.code, 'route_not_found');
    })
  );

  test(
    'an unknown model names the reachable models, as /models lists them',
    withLogs(logs, async () => {
      const res = await chatStatus(gw, '/v1', 'nope', auth(LIMITED));
      assert.equal(res.status, 404, res.text);
      assert.match(res.json.error.message, /Known models: pool, hello, demo, gpt-4o-mini\.$/);
    })
  );
});

describe('the quickstart as shipped', () => {
  let gw;

  before(async () => {
    const dir = path.join(REPO_ROOT, 'examples', 'quickstart');
    const gateway = fs.readFileSync(path.join(dir, 'gateway.yaml'), 'utf8').replace(/port: 8080/, 'port: __PORT__');
    assert.match(gateway, /port: __PORT__/);
    gw = await startGateway({ manifests: gateway, files: { 'secret.yaml': fs.readFileSync(path.join(dir, 'secret.yaml'), 'utf8') } });
  });

  after(async () => {
    if (gw) await gw.stop();
  });

  test(
    'GET /v1/models lists demo, its alias and hello, and each answers',
    withLogs(
      () => gw,
      async () => {
        const ids = await assertListingMatchesChat(gw, '/v1', { authorization: 'Bearer sk-ctxgate-demo' }, ['demo', 'gpt-4o-mini', 'hello']);
        assert.deepEqual(ids, ['demo', 'gpt-4o-mini', 'hello']);
      }
    )
  );
});
