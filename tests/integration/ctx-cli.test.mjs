// ctx-cli.test.mjs — `ctxgate ctx list|show|export|delete` (the built binary) against a running
// gateway: output formats, cursor following, --mcp/--key/--tenant/--limit, $CTXGATE_URL and
// $CTXGATE_API_KEY, the server's error message on stderr with exit 1, usage errors with exit 2.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { freePort, runCtxgate, startGateway, withLogs } from '../lib/gateway.mjs';
import { postJSON, rawRequest } from '../lib/http.mjs';

const USER_KEY = 'sk-cli-user-123';
const ADMIN_KEY = 'sk-cli-admin-456';
const N = 23;

describe('ctxgate ctx', () => {
  let gw;
  const ids = Array.from({ length: N }, (_, i) => `conv-${String(i).padStart(2, '0')}`);
  const apiURL = (path, q = '') => `${gw.url}/v1/contexts${path}?mcp=cli-main${q}`;
  const auth = { authorization: `Bearer ${USER_KEY}` };
  const ctx = (args, env) => runCtxgate(['ctx', ...args], { env: { CTXGATE_URL: '', CTXGATE_API_KEY: '', ...(env || {}) } });
  const common = () => ['--url', gw.url, '--mcp', 'cli-main', '--key', USER_KEY];

  before(async () => {
    gw = await startGateway({
      manifests: `
apiVersion: v1
kind: Secret
metadata: {name: keys}
stringData: {user: ${USER_KEY}, admin: ${ADMIN_KEY}}
---
apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: cli-main}
spec:
  storage: {type: Memory}
---
apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: cli-admin}
spec:
  storage: {type: Memory}
  security: {apiKeyRef: {name: keys, key: admin}}
---
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-ctx-cli}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - {name: echo, type: Mock}
  routes:
  - {name: main, backends: [{target: echo}], contextRef: {name: cli-main}}
  authentication:
    type: APIKey
    apiKeys: [{name: user, secretRef: {name: keys, key: user}}]
`,
    });
    for (let i = 0; i < N; i++) {
      const messages = Array.from({ length: (i % 4) + 1 }, (_, k) => ({ role: 'user', content: `m${k} of ${ids[i]}` }));
      const res = await postJSON(apiURL(`/${ids[i]}/messages`), { messages }, { headers: auth });
      assert.equal(res.status, 200, res.text);
    }
  });

  after(async () => {
    if (gw) await gw.stop();
  });

  const logs = () => gw;

  test('--help prints the usage and exits 0', async () => {
    const r = await ctx(['--help']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /usage: ctxgate ctx list\|show ID\|export\|delete ID/);
    for (const opt of ['--url', '--mcp', '--key', '--tenant', '--limit']) assert.ok(r.stdout.includes(opt), opt);
    const top = await runCtxgate(['--help']);
    assert.match(top.stdout, /ctx list\|show\|export\|delete/);
  });

  test('usage errors exit 2 with a message on stderr', async () => {
    const cases = [
      [[], /missing subcommand/],
      [['frobnicate'], /unknown subcommand 'frobnicate'/],
      [['show'], /exactly one conversation ID/],
      [['delete', 'a', 'b'], /exactly one conversation ID/],
      [['list', 'extra'], /takes no arguments/],
      [['list', '--limit', '0'], /--limit must be an integer from 1 to 1000/],
      [['list', '--limit', 'ten'], /--limit/],
      [['list', '--bogus'], /unknown option '--bogus'/],
      [['list', '--url'], /option --url needs a value/],
    ];
    for (const [args, re] of cases) {
      const r = await ctx(args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re, args.join(' '));
      assert.equal(r.stdout, '');
    }
  });

  test(
    'list prints a table of every conversation, following cursors (--limit 5 → 5 pages)',
    withLogs(logs, async () => {
      const before = gw.accessLog().filter((l) => l.path === '/v1/contexts').length;
      const r = await ctx(['list', ...common(), '--limit', '5']);
      assert.equal(r.code, 0, r.stderr);
      const lines = r.stdout.trimEnd().split('\n');
      assert.match(lines[0], /^ID\s+TURNS\s+UPDATED$/);
      const rows = lines.slice(1).map((l) => l.trim().split(/\s+/));
      assert.equal(rows.length, N);
      assert.deepEqual(rows.map((x) => x[0]).sort(), [...ids].sort(), 'every id exactly once');
      for (const [id, turns, updated] of rows) {
        const i = ids.indexOf(id);
        assert.equal(Number(turns), (i % 4) + 1, `turns of ${id}`);
        assert.match(updated, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
      }
      // the listing took ceil(23/5) = 5 requests
      await new Promise((res) => setTimeout(res, 100));
      const after = gw.accessLog().filter((l) => l.path === '/v1/contexts').length;
      assert.equal(after - before, 5, 'one request per page');
    })
  );

  test(
    '$CTXGATE_URL and $CTXGATE_API_KEY stand in for --url and --key',
    withLogs(logs, async () => {
      const r = await ctx(['list', '--mcp=cli-main'], { CTXGATE_URL: gw.url + '/', CTXGATE_API_KEY: USER_KEY });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.trimEnd().split('\n').length, N + 1);
    })
  );

  test(
    'show prints the record as pretty JSON',
    withLogs(logs, async () => {
      const r = await ctx(['show', 'conv-03', ...common()]);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stdout.split('\n').length > 5, 'indented over several lines');
      const shown = JSON.parse(r.stdout);
      const api = (await rawRequest(apiURL('/conv-03'), { headers: auth })).json;
      assert.deepEqual(shown, api);
      assert.equal(shown.messages.length, 4);
    })
  );

  test(
    'show percent-encodes the id',
    withLogs(logs, async () => {
      const id = 'order/7?x=1&y#z';
      const res = await postJSON(apiURL(`/${encodeURIComponent(id)}/messages`), { messages: [{ role: 'user', content: 'odd id' }] }, { headers: auth });
      assert.equal(res.status, 200, res.text);
      const r = await ctx(['show', id, ...common()]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(JSON.parse(r.stdout).id, id);
      const d = await ctx(['delete', id, ...common()]);
      assert.equal(d.code, 0, d.stderr);
    })
  );

  test(
    'export writes every full record as JSON Lines, following cursors',
    withLogs(logs, async () => {
      const r = await ctx(['export', ...common(), '--limit', '4']);
      assert.equal(r.code, 0, r.stderr);
      const lines = r.stdout.trimEnd().split('\n');
      assert.equal(lines.length, N);
      const recs = lines.map((l) => JSON.parse(l));
      assert.deepEqual(recs.map((x) => x.id).sort(), [...ids].sort());
      for (const rec of recs) {
        const i = ids.indexOf(rec.id);
        assert.equal(rec.messages.length, (i % 4) + 1);
        assert.equal(rec.messages[0].content, `m0 of ${rec.id}`);
        assert.equal(rec.version, 1);
      }
    })
  );

  test(
    "delete removes a conversation; deleting it again prints the server's message and exits 1",
    withLogs(logs, async () => {
      const id = 'to-delete';
      assert.equal((await postJSON(apiURL(`/${id}/messages`), { messages: [{ role: 'user', content: 'x' }] }, { headers: auth })).status, 200);
      const r = await ctx(['delete', id, ...common()]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /deleted conversation 'to-delete'/);
      assert.equal((await rawRequest(apiURL(`/${id}`), { headers: auth })).status, 404);
      const again = await ctx(['delete', id, ...common()]);
      assert.equal(again.code, 1);
      assert.match(again.stderr, /Conversation 'to-delete' does not exist/);
      const show = await ctx(['show', id, ...common()]);
      assert.equal(show.code, 1);
      assert.match(show.stderr, /does not exist/);
      assert.equal(show.stdout, '');
    })
  );

  test(
    "server errors: the gateway's message on stderr, exit 1",
    withLogs(logs, async () => {
      const noMcp = await ctx(['list', '--url', gw.url, '--key', USER_KEY]);
      assert.equal(noMcp.code, 1);
      assert.match(noMcp.stderr, /several ModelContextProtocols.*cli-main.*cli-admin|cli-admin.*cli-main/);
      const badKey = await ctx(['list', '--url', gw.url, '--mcp', 'cli-main', '--key', 'sk-nope']);
      assert.equal(badKey.code, 1);
      assert.match(badKey.stderr, /Incorrect API key/);
      const noKey = await ctx(['list', '--url', gw.url, '--mcp', 'cli-main']);
      assert.equal(noKey.code, 1);
      assert.match(noKey.stderr, /Missing API key/);
      const unknown = await ctx(['list', '--url', gw.url, '--mcp', 'nope', '--key', USER_KEY]);
      assert.equal(unknown.code, 1);
      assert.match(unknown.stderr, /'nope' is not part of this configuration/);
    })
  );

  test(
    'an unreachable gateway exits 1 naming the URL',
    withLogs(logs, async () => {
      const port = await freePort();
      const r = await ctx(['list', '--url', `http://127.0.0.1:${port}`]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, new RegExp(`cannot reach http://127.0.0.1:${port}`));
    })
  );

  test(
    "--tenant with the MCP's admin key",
    withLogs(logs, async () => {
      const w = await postJSON(`${gw.url}/v1/contexts/acme-conv/messages?mcp=cli-admin&tenant=acme`, { messages: [{ role: 'user', content: 'hi acme' }] }, {
        headers: { authorization: `Bearer ${ADMIN_KEY}` },
      });
      assert.equal(w.status, 200, w.text);
      const base = ['--url', gw.url, '--mcp', 'cli-admin', '--key', ADMIN_KEY];
      const withT = await ctx(['list', ...base, '--tenant', 'acme']);
      assert.equal(withT.code, 0, withT.stderr);
      assert.match(withT.stdout, /^acme-conv\s+1\s+/m);
      const withoutT = await ctx(['list', ...base]);
      assert.equal(withoutT.code, 0, withoutT.stderr);
      assert.equal(withoutT.stdout.trimEnd().split('\n').length, 1, 'only the header: the default tenant is empty');
      const show = await ctx(['show', 'acme-conv', ...base, '--tenant=acme']);
      assert.equal(show.code, 0, show.stderr);
      assert.equal(JSON.parse(show.stdout).messages[0].content, 'hi acme');
      const userKey = await ctx(['list', '--url', gw.url, '--mcp', 'cli-admin', '--key', USER_KEY]);
      assert.equal(userKey.code, 1);
      assert.match(userKey.stderr, /apiKeyRef/);
    })
  );
});
