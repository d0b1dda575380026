// context-backends.test.mjs — one conversation scenario against every context store backend:
// Memory, File (SQLite in a temporary directory), Redis and PostgreSQL (real servers from
// tests/lib/servers.mjs). The durable backends (File, PostgreSQL) keep the history across a
// gateway restart, and an answer the client received in full survives the gateway being killed
// with SIGKILL right after it (non-stream, and streamed through data: [DONE]). For that the test
// holds the store's write lock (sqlite3 / psql) while a gated upstream completes the answer, so
// "no answer reaches the client before its turn is recorded" is checked, not raced. The store
// itself is inspected too (sqlite3 / psql / RESP), so a gateway that silently used another store fails.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';

import { startFakeOpenAI } from '../fakes/openai.mjs';
import { startGateway, withLogs } from '../lib/gateway.mjs';
import { assertOpenAIError, postJSON, waitFor, within } from '../lib/http.mjs';
import { startPostgres, startRedis } from '../lib/servers.mjs';

const PERSONA = 'You are the Acme backend test persona.';
const REDIS_PREFIX = 'itctx:';
const PG_PREFIX = 'itctx_';
const TENANT = 'default'; // no authentication: the default tenant

const user = (content) => ({ role: 'user', content });
const assistant = (content) => ({ role: 'assistant', content });
const system = (content) => ({ role: 'system', content });

/**
 * POSTs a streamed chat request and reads the raw SSE; onData(textSoFar) runs for every piece,
 * and the moment `data: [DONE]` has arrived onDone() runs (synchronously, before anything else
 * is read). Resolves {status, headers, text}.
 */
function streamUntilDone(url, body, headers, { onData = () => {}, onDone }) {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const payload = JSON.stringify(body);
    const req = http.request(
      {
        host: u.hostname,
        port: u.port,
        path: u.pathname,
        method: 'POST',
        agent: false,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload), ...headers },
      },
      (res) => {
        let text = '';
        let done = false;
        res.setEncoding('utf8');
        res.on('data', (d) => {
          text += d;
          onData(text);
          if (!done && text.includes('data: [DONE]')) {
            done = true;
            onDone();
            resolve({ status: res.statusCode, headers: res.headers, text });
          }
        });
        const end = () => {
          if (!done) resolve({ status: res.statusCode, headers: res.headers, text });
        };
        res.on('end', end);
        res.on('aborted', end);
        res.on('error', end);
      }
    );
    req.setTimeout(30000, () => req.destroy(new Error(`no complete answer from ${url} within 30 s`)));
    req.on('error', reject);
    req.end(payload);
  });
}

/** The content of an SSE chat stream's deltas, joined. */
function streamedText(sse) {
  let out = '';
  for (const block of sse.split('\n\n')) {
    const line = block.split('\n').find((l) => l.startsWith('data: '));
    if (!line || line === 'data: [DONE]') continue;
    const ev = JSON.parse(line.slice(6));
    out += ev.choices?.[0]?.delta?.content ?? '';
  }
  return out;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * An OpenAI-wire upstream whose answers wait at a gate: a streamed answer sends its role chunk
 * and first content piece, then waits; a non-stream answer waits before its response. open()
 * lets the waiting answer finish. This makes "the answer is complete upstream while the store is
 * locked" an ordering the test controls instead of a race.
 */
async function startGatedUpstream(pieces) {
  const requests = [];
  let gate = null;
  let openGate = () => {};
  const arm = () => {
    gate = new Promise((r) => (openGate = r));
  };
  arm();
  const server = http.createServer((req, res) => {
    let raw = '';
    req.on('data', (d) => (raw += d));
    req.on('end', async () => {
      const body = JSON.parse(raw || '{}');
      requests.push(body);
      const text = pieces.join('');
      if (body.stream !== true) {
        await gate;
        const payload = JSON.stringify({
          id: 'chatcmpl-gated',
          object: 'chat.completion',
          created: 1,
          model: body.model,
          choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' }],
          usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
        });
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) });
        res.end(payload);
        return;
      }
      const ev = (delta, finish = null) =>
        `data: ${JSON.stringify({ id: 'chatcmpl-gated', object: 'chat.completion.chunk', created: 1, model: body.model, choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(ev({ role: 'assistant', content: '' }));
      res.write(ev({ content: pieces[0] }));
      await gate;
      for (const p of pieces.slice(1)) res.write(ev({ content: p }));
      res.write(ev({}, 'stop'));
      res.end('data: [DONE]\n\n');
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    baseURL: `http://127.0.0.1:${server.address().port}/v1`,
    requests,
    arm,
    open: () => openGate(),
    close: () => new Promise((r) => server.close(() => r())),
  };
}

/** Resolves once `child`'s stdout has shown `marker`; rejects if it exits first. */
function waitOutput(child, marker, what) {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const onData = (d) => {
      out += d;
      if (out.includes(marker)) {
        child.stdout.off('data', onData);
        resolve();
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', (d) => (err += d));
    child.once('exit', (code) => reject(new Error(`${what} exited (${code}) before it held the lock: ${err}`)));
  });
}

describe('context store backends', () => {
  let fake;
  let gated;
  let redis;
  let pg;
  let tmp;
  const GATED_PIECES = ['This answer ', 'was complete ', 'when the gateway died.'];

  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ctxgate-ctxfile-'));
    [fake, gated, redis, pg] = await Promise.all([startFakeOpenAI(), startGatedUpstream(GATED_PIECES), startRedis(), startPostgres()]);
  });

  after(async () => {
    await Promise.allSettled([fake?.close(), gated?.close(), redis?.stop(), pg?.stop()]);
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  beforeEach(() => fake?.reset());

  const BACKENDS = [
    {
      type: 'Memory',
      durable: false,
      storage: () => ({ type: 'Memory' }),
      stored: null, // nothing to look at from outside the process
    },
    {
      type: 'File',
      durable: true,
      storage: () => ({ type: 'File', config: { path: path.join(tmp, 'ctx.db') } }),
      // [version, turns] of the stored row, or null
      stored: async (id) => {
        const out = execFileSync(
          'sqlite3',
          [path.join(tmp, 'ctx.db'), `SELECT version, turns FROM conversations WHERE tenant = '${TENANT}' AND id = '${id}'`],
          { encoding: 'utf8' }
        ).trim();
        return out ? out.split('|').map(Number) : null;
      },
      // holds SQLite's write lock (readers go on: WAL); the gateway's writer waits (busy timeout)
      async lockWrites() {
        const child = spawn('sqlite3', [path.join(tmp, 'ctx.db')], { stdio: ['pipe', 'pipe', 'pipe'] });
        const held = waitOutput(child, 'locked', 'sqlite3');
        child.stdin.write("BEGIN IMMEDIATE;\nSELECT 'locked';\n");
        await held;
        return {
          // a blocked writer cannot be seen from outside SQLite: give the commit time to start
          waitBlocked: () => sleep(300),
          release: () => new Promise((r) => {
            child.once('exit', r);
            child.stdin.end('COMMIT;\n');
          }),
          abort: () => child.exitCode === null && child.kill('SIGKILL'), // a failed test must not leave it
        };
      },
    },
    {
      type: 'Redis',
      durable: false,
      storage: () => ({ type: 'Redis', config: { url: redis.url, keyPrefix: REDIS_PREFIX } }),
      stored: async (id) => {
        const [v, t] = await redis.command('HMGET', `${REDIS_PREFIX}${TENANT}:${id}`, 'v', 't');
        return v === null ? null : [Number(v), Number(t)];
      },
    },
    {
      type: 'PostgreSQL',
      durable: true,
      storage: () => ({ type: 'PostgreSQL', config: { dsn: pg.dsn, keyPrefix: PG_PREFIX } }),
      stored: async (id) => {
        const out = await pg.sql(`SELECT version, turns FROM ${PG_PREFIX}conversations WHERE tenant = '${TENANT}' AND id = '${id}'`);
        return out ? out.split('|').map(Number) : null;
      },
      // EXCLUSIVE mode blocks every write to the table and lets reads through
      async lockWrites() {
        const child = pg.psqlSession();
        const held = waitOutput(child, 'locked', 'psql');
        child.stdin.write(`BEGIN;\nLOCK TABLE ${PG_PREFIX}conversations IN EXCLUSIVE MODE;\nSELECT 'locked';\n`);
        await held;
        const waiting = `SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE NOT l.granted AND c.relname = '${PG_PREFIX}conversations'`;
        return {
          // the gateway's write is queued behind the lock: PostgreSQL shows it as not granted
          waitBlocked: async () => {
            for (let i = 0; i < 400 && (await pg.sql(waiting)) === '0'; i++) await sleep(25);
            assert.notEqual(await pg.sql(waiting), '0', "the gateway's write waits for the lock");
          },
          release: () => new Promise((r) => {
            child.once('exit', r);
            child.stdin.end('COMMIT;\n');
          }),
          abort: () => child.exitCode === null && child.kill('SIGKILL'), // a failed test must not leave it
        };
      },
    },
  ];

  for (const backend of BACKENDS) {
    describe(backend.type, () => {
      let gw = null;
      const logs = () => gw;

      const manifests = () => [
        {
          apiVersion: 'ctxgate.io/v1alpha1',
          kind: 'ModelContextProtocol',
          metadata: { name: 'conv' },
          spec: { storage: backend.storage(), persona: PERSONA, contextStrategy: { type: 'LastN', lastN: 20 } },
        },
        `
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-backend}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - name: smart
    type: OpenAI
    config: {endpoint: ${fake.baseURL}, modelName: gpt-4o-mini}
  - name: gated
    type: OpenAI
    config: {endpoint: ${gated.baseURL}, modelName: gpt-4o-mini}
  routes:
  - {name: main, backends: [{target: smart}], contextRef: {name: conv}}
  - {name: gated, pathPrefix: /v1/gated, backends: [{target: gated}], contextRef: {name: conv}}
  authentication: {type: None}
`,
      ];

      async function launch() {
        gw = await startGateway({ manifests: manifests() });
        return gw;
      }
      /** SIGTERM (or SIGKILL) the running gateway and start a new one on the same configuration. */
      async function relaunch(signal = 'SIGTERM') {
        if (gw) {
          await gw.kill(signal);
          await gw.stop();
        }
        return launch();
      }

      before(async () => {
        await launch();
      });
      after(async () => {
        if (gw) await gw.stop();
      });

      async function ask(conv, content, { stream = false } = {}) {
        const client = new OpenAI({ baseURL: gw.baseURL, apiKey: 'unused', maxRetries: 0, timeout: 30000 });
        const n = fake.chatRequests().length;
        const { data, response } = await client.chat.completions
          .create({ model: 'smart', stream, messages: [user(content)] }, { headers: { 'X-Conversation-Id': conv } })
          .withResponse();
        let text;
        if (stream) {
          text = '';
          for await (const chunk of data) text += chunk.choices[0]?.delta?.content ?? '';
        } else {
          text = data.choices[0].message.content;
        }
        assert.equal(fake.chatRequests().length, n + 1);
        return { text, turns: response.headers.get('x-context-turns'), sent: fake.chatRequests().at(-1).body.messages };
      }

      test(
        `three turns (plain, streamed, plain)${backend.durable ? ' with a gateway restart between turns' : ''}`,
        withLogs(logs, async () => {
          const conv = `scenario-${backend.type}`;
          fake.next({ text: 'First answer, stored.' });
          const t1 = await ask(conv, 'first question');
          assert.equal(t1.text, 'First answer, stored.');
          assert.equal(t1.turns, '0');
          if (backend.stored) assert.deepEqual(await backend.stored(conv), [1, 2], 'the store holds version 1 with 2 messages');
          if (backend.durable) await relaunch();

          fake.next({ text: 'Second answer arrives in many small streamed pieces.' });
          const t2 = await ask(conv, 'second question', { stream: true });
          assert.equal(t2.text, 'Second answer arrives in many small streamed pieces.');
          assert.equal(t2.turns, '2');
          if (backend.stored) assert.deepEqual(await backend.stored(conv), [2, 4]);
          if (backend.durable) await relaunch();

          const t3 = await ask(conv, 'third question');
          assert.equal(t3.turns, '4');
          assert.deepEqual(t3.sent, [
            system(PERSONA),
            user('first question'),
            assistant('First answer, stored.'),
            user('second question'),
            assistant('Second answer arrives in many small streamed pieces.'),
            user('third question'),
          ]);
        })
      );

      if (backend.stored) {
        test(
          'a request without X-Conversation-Id stores nothing',
          withLogs(logs, async () => {
            const res = await fetch(`${gw.baseURL}/chat/completions`, {
              method: 'POST',
              headers: { 'content-type': 'application/json' },
              body: JSON.stringify({ model: 'smart', messages: [user('no header')] }),
            });
            assert.equal(res.status, 200);
            await res.text();
            assert.deepEqual(fake.chatRequests().at(-1).body.messages, [user('no header')]);
            assert.equal(await backend.stored(''), null);
            // and a conversation that was never used with the header does not exist
            assert.equal(await backend.stored('never-used'), null);
          })
        );
      }

      if (backend.durable) {
        const answer = GATED_PIECES.join('');
        /** The next request sees the killed gateway's last turn: checked through the fake. */
        async function assertTurnSurvived(conv, question) {
          const t2 = await ask(conv, 'still there?');
          assert.equal(t2.turns, '2');
          assert.deepEqual(t2.sent, [system(PERSONA), user(question), assistant(answer), user('still there?')]);
        }

        test(
          'kill -9 right after a complete non-stream answer: the turn is there in the next gateway',
          withLogs(logs, async () => {
            const conv = `kill-plain-${backend.type}`;
            gated.arm();
            const client = new OpenAI({ baseURL: `${gw.url}/v1/gated`, apiKey: 'unused', maxRetries: 0, timeout: 30000 });
            const victim = gw;
            let answered = false;
            const n = gated.requests.length;
            const pending = client.chat.completions
              .create({ model: 'gated', messages: [user('remember this')] }, { headers: { 'X-Conversation-Id': conv } })
              .then((completion) => {
                answered = true;
                victim.proc.kill('SIGKILL'); // the moment the client has the whole answer
                return completion;
              });
            // history read, request upstream
            await waitFor(() => gated.requests.length > n, { what: 'the request upstream' });
            // the store refuses writes while the model answers: the gateway cannot record the turn
            const lock = await backend.lockWrites();
            try {
              gated.open();
              await lock.waitBlocked();
              assert.equal(answered, false, 'no answer reaches the client before its turn is recorded');
              await lock.release();
            } finally {
              lock.abort();
            }
            const completion = await pending;
            assert.equal(completion.choices[0].message.content, answer);
            assert.equal((await victim.exited).signal, 'SIGKILL');
            await relaunch();
            await assertTurnSurvived(conv, 'remember this');
          })
        );

        test(
          'kill -9 the moment a streamed answer reached data: [DONE]: the turn is there in the next gateway',
          withLogs(logs, async () => {
            const conv = `kill-stream-${backend.type}`;
            gated.arm();
            const victim = gw;
            let firstPiece;
            const started = new Promise((r) => (firstPiece = r));
            let sse = '';
            const pending = streamUntilDone(
              `${gw.url}/v1/gated/chat/completions`,
              { model: 'gated', stream: true, messages: [user('stream then crash')] },
              { 'x-conversation-id': conv },
              {
                onData: (text) => {
                  sse = text;
                  if (text.includes(GATED_PIECES[0])) firstPiece();
                },
                onDone: () => victim.proc.kill('SIGKILL'),
              }
            );
            await within(started, 10000, 'the first streamed piece'); // history read, the answer is streaming
            const lock = await backend.lockWrites();
            try {
              gated.open();
              await waitFor(() => sse.includes('"finish_reason":"stop"'), { what: 'the whole answer' });
              await lock.waitBlocked();
              assert.ok(!sse.includes('[DONE]'), 'no [DONE] before the turn is recorded');
              await lock.release();
            } finally {
              lock.abort();
            }
            const res = await pending;
            assert.equal(res.status, 200);
            assert.ok(res.text.includes('data: [DONE]'), `the stream reached [DONE]: ${res.text}`);
            assert.equal(streamedText(res.text.slice(0, res.text.indexOf('data: [DONE]'))), answer);
            assert.equal((await victim.exited).signal, 'SIGKILL', 'the gateway was killed, not stopped');
            await relaunch();
            await assertTurnSurvived(conv, 'stream then crash');
          })
        );
      }

      if (backend.type === 'Redis') {
        test(
          'Redis restarted without persistence: the gateway reconnects; the conversation is gone (documented)',
          withLogs(logs, async () => {
            const conv = 'redis-restart';
            await ask(conv, 'before the Redis restart');
            assert.deepEqual(await backend.stored(conv), [1, 2]);

            // while Redis is down: a clear 503, and the model is not asked
            await redis.halt();
            const n = fake.chatRequests().length;
            const down = await postJSON(
              `${gw.baseURL}/chat/completions`,
              { model: 'smart', messages: [user('while Redis is down')] },
              { headers: { 'x-conversation-id': conv } }
            );
            assertOpenAIError(assert, down, 503, 'context_store_unavailable');
            assert.equal(fake.chatRequests().length, n, 'no upstream request without the history');

            await redis.restart();
            assert.equal(await redis.command('DBSIZE'), 0, 'persistence is off: Redis restarted empty');

            // The store reconnects by itself: every request after the restart succeeds, on both
            // workers (a refused connect attempt made while Redis was down is noticed at once, so
            // no worker is left inside a stale attempt; at worst a request waits for the next
            // reconnect).
            const statuses = [];
            let ok = null;
            for (let i = 0; i < 6; i++) {
              const res = await fetch(`${gw.baseURL}/chat/completions`, {
                method: 'POST',
                headers: { 'content-type': 'application/json', 'x-conversation-id': `${conv}-${i}` },
                body: JSON.stringify({ model: 'smart', messages: [user('after the restart')] }),
              });
              const body = await res.json();
              statuses.push(res.status);
              assert.equal(res.status, 200, `request ${i} after the restart: ${JSON.stringify(body)}`);
              if (i === 0) ok = res;
            }
            assert.equal(ok.headers.get('x-context-turns'), '0', 'nothing survived the restart');
            assert.deepEqual(fake.chatRequests().at(-1).body.messages, [system(PERSONA), user('after the restart')]);
            assert.deepEqual(await backend.stored(`${conv}-0`), [1, 2], 'the new turn starts a new record');
            console.log(`# Redis restart: statuses of the requests after it: ${statuses.join(', ')}`);
          })
        );
      }

      if (backend.type === 'PostgreSQL') {
        test(
          'PostgreSQL goes away: 503 context_store_unavailable; once it is back the conversation continues',
          withLogs(logs, async () => {
            const conv = 'pg-outage';
            await ask(conv, 'before the outage');
            await pg.halt();
            const n = fake.chatRequests().length;
            const down = await postJSON(
              `${gw.baseURL}/chat/completions`,
              { model: 'smart', messages: [user('during the outage')] },
              { headers: { 'x-conversation-id': conv } }
            );
            assertOpenAIError(assert, down, 503, 'context_store_unavailable');
            assert.equal(fake.chatRequests().length, n, 'no upstream request without the history');
            await pg.restart();

            // the store reconnects with backoff: a request may still meet it reconnecting (503)
            let res;
            await waitFor(
              async () => {
                res = await postJSON(
                  `${gw.baseURL}/chat/completions`,
                  { model: 'smart', messages: [user('after the outage')] },
                  { headers: { 'x-conversation-id': conv } }
                );
                if (res.status !== 200) assertOpenAIError(assert, res, 503, 'context_store_unavailable');
                return res.status === 200;
              },
              { timeoutMs: 15000, intervalMs: 200, what: 'a request to succeed after PostgreSQL came back' }
            );
            assert.equal(res.headers['x-context-turns'], '2', 'the turn from before the outage is there');
            assert.deepEqual(fake.chatRequests().at(-1).body.messages, [
              system(PERSONA),
              user('before the outage'),
              assistant('reply to: before the outage'),
              user('after the outage'),
            ]);
          })
        );
      }
    });
  }
});
