// context-lifecycle.test.mjs — what the ModelContextProtocol does to stored conversations, seen
// through the gateway, on every backend (Memory, File, Redis, PostgreSQL): one writer per
// conversation (409 conversation_conflict for the loser of a race, exactly one turn pair
// stored), contextLifecycle ttlSeconds / maxTurnsPerConversation / maxEntries with LRU eviction;
// and on the File store ReadOnlyMany (history injected, nothing appended) and encryption at rest
// (the SQLite file holds no plaintext of the messages).
import { after, afterEach, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';

import { startFakeOpenAI } from '../fakes/openai.mjs';
import { startGateway, withLogs } from '../lib/gateway.mjs';
import { assertOpenAIError, postJSON, sseData } from '../lib/http.mjs';
import { startPostgres, startRedis } from '../lib/servers.mjs';

const PERSONA = 'You are the lifecycle test persona.';
const MOCK_TEXT = 'Slow mock answer.';

const user = (content) => ({ role: 'user', content });
const assistant = (content) => ({ role: 'assistant', content });
const system = (content) => ({ role: 'system', content });
const turn = (q) => [user(q), assistant(`reply to: ${q}`)];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const mcp = (name, spec) => ({
  apiVersion: 'ctxgate.io/v1alpha1',
  kind: 'ModelContextProtocol',
  metadata: { name },
  spec: { persona: PERSONA, ...spec },
});

function gatewayDoc(fake, routes, extraTargets = '') {
  return `
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-lifecycle}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - name: smart
    type: OpenAI
    config: {endpoint: ${fake.baseURL}, modelName: gpt-4o-mini}
${extraTargets}
  routes:
${routes.map((r) => `  - ${JSON.stringify(r)}`).join('\n')}
  authentication: {type: None}
`;
}

/** One non-stream turn through the SDK on `prefix`: {text, turns, sent}. */
async function ask(gw, fake, prefix, conv, content, model = 'smart') {
  const client = new OpenAI({ baseURL: `${gw.url}${prefix}`, apiKey: 'unused', maxRetries: 0, timeout: 30000 });
  const n = fake.chatRequests().length;
  const { data, response } = await client.chat.completions
    .create({ model, messages: [user(content)] }, { headers: { 'X-Conversation-Id': conv } })
    .withResponse();
  const reqs = fake.chatRequests();
  return {
    text: data.choices[0].message.content,
    turns: response.headers.get('x-context-turns'),
    sent: reqs.length > n ? reqs.at(-1).body.messages : null,
  };
}

/**
 * POSTs a streamed chat request; resolves {status, text} once the response ended.
 */
const streamRaw = (url, body, headers) => postJSON(url, { ...body, stream: true }, { headers });

describe('contextLifecycle and one writer per conversation', () => {
  let redis;
  let pg;
  let tmp;

  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ctxgate-ctxlife-'));
    [redis, pg] = await Promise.all([startRedis(), startPostgres()]);
  });

  after(async () => {
    await Promise.allSettled([redis?.stop(), pg?.stop()]);
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  // storage for MCP `name` on each backend; every MCP gets its own database / key prefix / table
  const BACKENDS = {
    Memory: () => ({ type: 'Memory' }),
    File: (name) => ({ type: 'File', config: { path: path.join(tmp, `${name}.db`) } }),
    Redis: (name) => ({ type: 'Redis', config: { url: redis.url, keyPrefix: `${name}:` } }),
    PostgreSQL: (name) => ({ type: 'PostgreSQL', config: { dsn: pg.dsn, keyPrefix: `${name.replace(/-/g, '_')}_` } }),
  };

  for (const [backend, storage] of Object.entries(BACKENDS)) {
    describe(backend, () => {
      let fake;
      let gw;
      const logs = () => gw;

      before(async () => {
        fake = await startFakeOpenAI();
        gw = await startGateway({
          manifests: [
            mcp('ctx-race', { storage: storage('ctx-race') }),
            mcp('ctx-ttl', { storage: storage('ctx-ttl'), contextLifecycle: { ttlSeconds: 1 } }),
            mcp('ctx-turns', { storage: storage('ctx-turns'), contextLifecycle: { maxTurnsPerConversation: 4 } }),
            mcp('ctx-lru', { storage: storage('ctx-lru'), contextLifecycle: { maxEntries: 2, evictionPolicy: 'LRU' } }),
            gatewayDoc(
              fake,
              [
                { name: 'race-slow', pathPrefix: '/v1/slow', backends: [{ target: 'slowmock' }], contextRef: { name: 'ctx-race' } },
                { name: 'race-check', pathPrefix: '/v1/race', backends: [{ target: 'smart' }], contextRef: { name: 'ctx-race' } },
                { name: 'ttl', pathPrefix: '/v1/ttl', backends: [{ target: 'smart' }], contextRef: { name: 'ctx-ttl' } },
                { name: 'turns', pathPrefix: '/v1/turns', backends: [{ target: 'smart' }], contextRef: { name: 'ctx-turns' } },
                { name: 'lru', pathPrefix: '/v1/lru', backends: [{ target: 'smart' }], contextRef: { name: 'ctx-lru' } },
              ],
              `  - name: slowmock
    type: Mock
    config: {mock: {text: "${MOCK_TEXT}", latencyMs: 300}}`
            ),
          ],
        });
      });

      after(async () => {
        if (gw) await gw.stop();
        if (fake) await fake.close();
      });

      beforeEach(() => fake.reset());

      test(
        'two simultaneous requests on a new conversation: one succeeds, the other gets 409 conversation_conflict',
        withLogs(logs, async () => {
          const conv = `race-${process.pid}`;
          const send = (content) =>
            postJSON(`${gw.url}/v1/slow/chat/completions`, { model: 'slowmock', messages: [user(content)] }, { headers: { 'x-conversation-id': conv } });
          const results = await Promise.all([send('writer A'), send('writer B')]);
          const ok = results.filter((r) => r.status === 200);
          const conflict = results.filter((r) => r.status !== 200);
          assert.equal(ok.length, 1, `exactly one succeeds: ${results.map((r) => `${r.status} ${r.text}`).join(' | ')}`);
          assert.equal(conflict.length, 1);
          const e = assertOpenAIError(assert, conflict[0], 409, 'conversation_conflict');
          assert.equal(e.type, 'invalid_request_error');
          assert.equal(ok[0].json.choices[0].message.content, MOCK_TEXT);
          const winner = results[0].status === 200 ? 'writer A' : 'writer B';

          // the store holds exactly the winner's turn pair
          const next = await ask(gw, fake, '/v1/race', conv, 'who won?');
          assert.equal(next.turns, '2');
          assert.deepEqual(next.sent, [system(PERSONA), user(winner), assistant(MOCK_TEXT), user('who won?')]);
        })
      );

      test(
        'two simultaneous streams on a new conversation: one ends with [DONE], the other with a conversation_conflict event',
        withLogs(logs, async () => {
          const conv = `race-stream-${process.pid}`;
          const send = (content) =>
            streamRaw(`${gw.url}/v1/slow/chat/completions`, { model: 'slowmock', messages: [user(content)] }, { 'x-conversation-id': conv });
          const results = await Promise.all([send('stream A'), send('stream B')]);
          const events = results.map((r) => sseData(r.text));
          const done = events.filter((ev) => ev.at(-1) === '[DONE]');
          const lost = events.filter((ev) => ev.at(-1) !== '[DONE]');
          assert.equal(done.length, 1, `exactly one stream ends with [DONE]: ${results.map((r) => r.text).join(' | ')}`);
          assert.equal(lost.length, 1);
          assert.ok(!lost[0].includes('[DONE]'), 'the loser never gets [DONE]');
          const err = JSON.parse(lost[0].at(-1));
          assert.equal(err.error.code, 'conversation_conflict', lost[0].at(-1));
          const winner = events[0].at(-1) === '[DONE]' ? 'stream A' : 'stream B';

          const next = await ask(gw, fake, '/v1/race', conv, 'who won the stream?');
          assert.equal(next.turns, '2');
          assert.deepEqual(next.sent, [system(PERSONA), user(winner), assistant(MOCK_TEXT), user('who won the stream?')]);
        })
      );

      test(
        'ttlSeconds 1: a conversation left alone for 2.5 s is gone',
        withLogs(logs, async () => {
          const conv = `ttl-${process.pid}`;
          await ask(gw, fake, '/v1/ttl', conv, 'remember me briefly');
          const soon = await ask(gw, fake, '/v1/ttl', conv, 'right away');
          assert.equal(soon.turns, '2', 'still there within the TTL');
          await sleep(2500);
          const late = await ask(gw, fake, '/v1/ttl', conv, 'after the pause');
          assert.equal(late.turns, '0', 'expired');
          assert.deepEqual(late.sent, [system(PERSONA), user('after the pause')]);
        })
      );

      test(
        'maxTurnsPerConversation 4: the oldest messages are dropped',
        withLogs(logs, async () => {
          const conv = `turns-${process.pid}`;
          for (const q of ['one', 'two', 'three']) await ask(gw, fake, '/v1/turns', conv, q);
          const last = await ask(gw, fake, '/v1/turns', conv, 'four');
          assert.equal(last.turns, '4');
          assert.deepEqual(last.sent, [system(PERSONA), ...turn('two'), ...turn('three'), user('four')]);
        })
      );

      test(
        'maxEntries 2 with LRU: a new conversation evicts the least recently used one',
        withLogs(logs, async () => {
          const id = (x) => `lru-${x}-${process.pid}`;
          await ask(gw, fake, '/v1/lru', id('a'), 'a1');
          await ask(gw, fake, '/v1/lru', id('b'), 'b1');
          await ask(gw, fake, '/v1/lru', id('a'), 'a2'); // a is now more recently used than b (FIFO would evict a)
          await ask(gw, fake, '/v1/lru', id('c'), 'c1'); // third conversation: b goes
          const a = await ask(gw, fake, '/v1/lru', id('a'), 'a3');
          assert.equal(a.turns, '4', 'a survived');
          assert.deepEqual(a.sent, [system(PERSONA), ...turn('a1'), ...turn('a2'), user('a3')]);
          const b = await ask(gw, fake, '/v1/lru', id('b'), 'b2');
          assert.equal(b.turns, '0', 'b was evicted');
          assert.deepEqual(b.sent, [system(PERSONA), user('b2')]);
        })
      );
    });
  }
});

describe('File store: ReadOnlyMany and encryption at rest', () => {
  let fake;
  let tmp;
  let gw = null;
  const started = []; // every gateway a test started; all are stopped after it, even on failure
  const logs = () => gw;
  const launch = async (manifests) => {
    gw = await startGateway({ manifests });
    started.push(gw);
    return gw;
  };

  before(async () => {
    fake = await startFakeOpenAI();
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ctxgate-ctxlife-'));
  });

  after(async () => {
    if (fake) await fake.close();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  beforeEach(() => fake.reset());
  afterEach(async () => {
    await Promise.allSettled(started.splice(0).map((g) => g.stop()));
    gw = null;
  });

  const storedVersion = (db, id) =>
    execFileSync('sqlite3', [db, `SELECT version FROM conversations WHERE id = '${id}'`], { encoding: 'utf8' }).trim();

  test(
    'ReadOnlyMany on a File store another gateway wrote: history injected, nothing appended',
    withLogs(logs, async () => {
      const db = path.join(tmp, 'shared.db');
      const conv = 'kb-conversation';
      const doc = (mode) => [
        mcp('ctx-shared', { storage: { type: 'File', config: { path: db } }, interactionPatterns: { readWriteMode: mode } }),
        gatewayDoc(fake, [{ name: 'main', backends: [{ target: 'smart' }], contextRef: { name: 'ctx-shared' } }]),
      ];
      await launch(doc('ReadWriteOnce'));
      await ask(gw, fake, '/v1', conv, 'seed one');
      await ask(gw, fake, '/v1', conv, 'seed two');
      await gw.stop();
      assert.equal(storedVersion(db, conv), '2');

      await launch(doc('ReadOnlyMany'));
      for (const q of ['read only one', 'read only two']) {
        const r = await ask(gw, fake, '/v1', conv, q);
        assert.equal(r.text, `reply to: ${q}`, 'the request itself succeeds');
        assert.equal(r.turns, '4');
        assert.deepEqual(r.sent, [system(PERSONA), ...turn('seed one'), ...turn('seed two'), user(q)]);
      }
      assert.equal(storedVersion(db, conv), '2', 'nothing was appended');
      const fresh = await ask(gw, fake, '/v1', 'kb-new', 'new conversation');
      assert.equal(fresh.turns, '0');
      assert.equal(storedVersion(db, 'kb-new'), '', 'no record was created');
    })
  );

  test(
    'encryption on: the SQLite database and its WAL hold no plaintext of the messages (they do without it)',
    withLogs(logs, async () => {
      const key = crypto.randomBytes(32).toString('base64');
      const SECRET_Q = 'PLAINTEXT-MARKER-question-7f3a';
      const SECRET_A = 'PLAINTEXT-MARKER-answer-91cc';
      const files = (db) => [db, `${db}-wal`].filter((f) => fs.existsSync(f));
      const holdsPlaintext = (db) =>
        files(db).some((f) => {
          const bytes = fs.readFileSync(f);
          return bytes.includes(Buffer.from('PLAINTEXT-MARKER')) || bytes.includes(Buffer.from(PERSONA));
        });
      const sealed = path.join(tmp, 'sealed.db');
      const clear = path.join(tmp, 'clear.db');
      await launch([
        { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'ctx-key' }, data: { key } },
        mcp('ctx-sealed', {
          storage: { type: 'File', config: { path: sealed }, encryption: { enabled: true, keyRef: { name: 'ctx-key', key: 'key' } } },
        }),
        mcp('ctx-clear', { storage: { type: 'File', config: { path: clear } } }),
        gatewayDoc(fake, [
          { name: 'sealed', pathPrefix: '/v1/sealed', backends: [{ target: 'smart' }], contextRef: { name: 'ctx-sealed' } },
          { name: 'clear', pathPrefix: '/v1/clear', backends: [{ target: 'smart' }], contextRef: { name: 'ctx-clear' } },
        ]),
      ]);
      for (const prefix of ['/v1/sealed', '/v1/clear']) {
        fake.next({ text: SECRET_A });
        await ask(gw, fake, prefix, 'enc-conv', SECRET_Q);
        const again = await ask(gw, fake, prefix, 'enc-conv', 'and again');
        assert.equal(again.turns, '2', `${prefix}: the stored turn reads back`);
        assert.deepEqual(again.sent, [system(PERSONA), user(SECRET_Q), assistant(SECRET_A), user('and again')]);
      }
      assert.ok(files(sealed).length > 0 && files(clear).length > 0, 'both databases exist');
      // the detector works: the unencrypted store shows the text
      assert.ok(holdsPlaintext(clear), 'control: the unencrypted File store holds the plaintext');
      assert.ok(!holdsPlaintext(sealed), 'the encrypted store holds no plaintext (while the gateway runs)');
      await gw.stop();
      assert.ok(!holdsPlaintext(sealed), 'the encrypted store holds no plaintext (after shutdown, WAL checkpointed)');
    })
  );
});
