// http-limits.test.mjs — connection-level faults: many idle connections against
// spec.listener.maxConnections (the oldest idle connection is closed to make room, as nginx
// reuses idle connections; with nothing idle a new connection is accepted and closed at once),
// at a small scale and with 10,000 idle connections, and a slowloris client that drips its
// headers (408 at the header timeout, however steadily it drips).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';

import { metricSum, parseMetrics, startGateway, withLogs } from '../lib/gateway.mjs';
import { waitFor } from '../lib/http.mjs';

const manifest = (maxConnections) => `
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-http-limits}
spec:
  listener: {port: __PORT__, maxConnections: ${maxConnections}}
  modelTargets:
  - name: m
    type: Mock
  authentication: {type: None}
`;

/** An open TCP connection that sends nothing; .gone resolves when the gateway closes it. */
function idleSocket(port) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    s.setNoDelay(true);
    s.received = '';
    s.gone = new Promise((r) => s.once('close', r));
    s.on('data', (d) => (s.received += d));
    let connected = false;
    s.once('connect', () => {
      connected = true;
      resolve(s);
    });
    s.on('error', (err) => {
      if (!connected) reject(err); // afterwards: a reset after the gateway closed it
    });
  });
}

async function openIdle(port, n, batch = 200) {
  const out = [];
  while (out.length < n) {
    const k = Math.min(batch, n - out.length);
    out.push(...(await Promise.all(Array.from({ length: k }, () => idleSocket(port)))));
  }
  return out;
}

const isClosed = (s) => s.destroyed || s.readyState === 'closed' || s.readableEnded;

/** GET over one keep-alive connection (agent with one socket): {status, text}. */
function getVia(agent, port, path) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent }, (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode, text }));
    });
    req.setTimeout(20000, () => req.destroy(new Error(`GET ${path}: no answer`)));
    req.on('error', reject);
  });
}

async function metricsVia(agent, port) {
  const res = await getVia(agent, port, '/metrics');
  assert.equal(res.status, 200);
  return parseMetrics(res.text);
}

describe('maxConnections, small scale (one worker)', () => {
  const MAX = 20;
  let gw;
  let agent;
  const socks = [];

  before(async () => {
    gw = await startGateway({ manifests: manifest(MAX), workers: 1 });
    agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  });

  after(async () => {
    for (const s of socks) s.destroy();
    agent?.destroy();
    if (gw) await gw.stop();
  });

  test(
    'at the limit the oldest idle connection makes room; requests on new and busy connections are served',
    withLogs(
      () => gw,
      async () => {
        // K: a keep-alive connection in use; the start-up probe's (fetch's pool keeps it ~4 s) goes
        await waitFor(async () => metricSum(await metricsVia(agent, gw.port), 'ctxgate_http_connections') === 1, {
          timeoutMs: 30000,
          what: 'only the keep-alive connection open',
        });
        socks.push(...(await openIdle(gw.port, MAX - 1)));
        await waitFor(async () => metricSum(await metricsVia(agent, gw.port), 'ctxgate_http_connections') === MAX, {
          what: `${MAX} connections open`,
        });
        // a new connection: the oldest idle one (the first raw socket) is closed for it
        const res = await fetch(`${gw.url}/healthz`);
        assert.equal(res.status, 200);
        await res.arrayBuffer();
        await within(socks[0].gone, 10000, 'the oldest idle connection is closed');
        assert.equal(socks[0].received, '', 'closed without a word, as an idle timeout would');
        assert.ok(socks.slice(1).every((s) => !isClosed(s)), 'only the oldest idle connection was closed');
        // the keep-alive connection is served on and counts what happened
        const m = await metricsVia(agent, gw.port);
        assert.equal(metricSum(m, 'ctxgate_http_connections_max'), MAX);
        assert.ok(metricSum(m, 'ctxgate_http_connections_limited_total', { action: 'closed_idle' }) >= 1);
        assert.equal(metricSum(m, 'ctxgate_http_connections_limited_total', { action: 'refused' }), 0);
      }
    )
  );

  test(
    'at the limit with nothing idle a new connection is accepted and closed at once',
    withLogs(
      () => gw,
      async () => {
        // every connection busy: each has sent part of a request (not idle, not closable)
        agent.destroy();
        agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
        const busy = 'POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n';
        const live = socks.filter((s) => !isClosed(s));
        for (const s of live) s.write(busy);
        // let the gateway see the keep-alive connection go and the others turn busy first
        await new Promise((r) => setTimeout(r, 300));
        while (live.length < MAX) {
          const s = await idleSocket(gw.port);
          s.write(busy);
          live.push(s);
          socks.push(s);
        }
        await new Promise((r) => setTimeout(r, 300));
        assert.ok(live.every((s) => !isClosed(s)), 'busy connections are never closed for room');
        const refused = await idleSocket(gw.port);
        refused.write('GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n');
        await within(refused.gone, 5000, 'the refused connection is closed');
        assert.equal(refused.received, '', 'a refused connection gets no answer');
        // room again: the busy ones finish (here: go away) and new connections are served
        for (const s of live) s.destroy();
        await waitFor(async () => {
          try {
            const r = await fetch(`${gw.url}/healthz`);
            await r.arrayBuffer();
            return r.status === 200;
          } catch {
            return false;
          }
        }, { what: 'a new connection served again' });
        const m = await metricsVia(agent, gw.port);
        assert.ok(metricSum(m, 'ctxgate_http_connections_limited_total', { action: 'refused' }) >= 1);
      }
    )
  );
});

describe('maxConnections on reload', () => {
  let gw;
  before(async () => {
    gw = await startGateway({ manifests: manifest(20) });
  });
  after(async () => {
    if (gw) await gw.stop();
  });

  test(
    'a reload applies a new maxConnections; an open-file limit too small for it is reported',
    withLogs(
      () => gw,
      async () => {
        const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
        try {
          assert.equal(metricSum(await metricsVia(agent, gw.port), 'ctxgate_http_connections_max'), 20);
          await gw.reload(manifest(30), { expect: 'success' });
          assert.equal(metricSum(await metricsVia(agent, gw.port), 'ctxgate_http_connections_max'), 30);
          const limit = nofileLimit('-Hn'); // the gateway raises its soft limit to the hard one
          if (limit > 0 && limit - 256 < 1000000) {
            await gw.reload(manifest(1000000), { expect: 'success' });
            assert.equal(metricSum(await metricsVia(agent, gw.port), 'ctxgate_http_connections_max'), limit - 256);
            assert.match(gw.stderr(), /spec\.listener\.maxConnections 1000000 exceeds what the open-file limit allows/);
          }
        } finally {
          agent.destroy();
        }
      }
    )
  );
});

function nofileLimit(flag = '-n') {
  try {
    const n = Number(execFileSync('sh', ['-c', `ulimit ${flag}`], { encoding: 'utf8' }).trim());
    return Number.isFinite(n) ? n : 0;
  } catch {
    return 0;
  }
}

describe('10,000 idle connections', () => {
  const N = 10000;
  const limit = nofileLimit();
  // this process holds N sockets, the gateway N + 256 reserved: both need room under ulimit -n
  const skip = limit && limit < N + 1000 ? `ulimit -n is ${limit}; needs ${N + 1000}` : false;
  let gw;
  let agent;
  let idle = [];

  before(async () => {
    if (skip) return;
    gw = await startGateway({ manifests: manifest(N), workers: 2 });
    agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  });

  after(async () => {
    for (const s of idle) s.destroy();
    agent?.destroy();
    if (gw) await gw.stop();
  });

  test(
    'with 10,000 idle connections open, new connections are still served',
    { skip, timeout: 120000 },
    withLogs(
      () => gw,
      async () => {
        idle = await openIdle(gw.port, N - 1);
        await waitFor(async () => metricSum(await metricsVia(agent, gw.port), 'ctxgate_http_connections') >= N, {
          timeoutMs: 30000,
          what: `${N} connections open`,
        });
        // 20 new keep-alive connections, each kept open: each needs an idle one closed
        const fresh = Array.from({ length: 20 }, () => new http.Agent({ keepAlive: true, maxSockets: 1 }));
        try {
          for (const a of fresh) assert.equal((await getVia(a, gw.port, '/healthz')).status, 200);
          // and they stay usable (the most recently used are the last to be closed)
          for (const a of fresh) assert.equal((await getVia(a, gw.port, '/healthz')).status, 200);
        } finally {
          for (const a of fresh) a.destroy();
        }
        const m = await metricsVia(agent, gw.port);
        const closedIdle = metricSum(m, 'ctxgate_http_connections_limited_total', { action: 'closed_idle' });
        assert.ok(closedIdle >= 20, `idle connections were closed to make room (${closedIdle})`);
        assert.equal(metricSum(m, 'ctxgate_http_connections_limited_total', { action: 'refused' }), 0);
        assert.ok(metricSum(m, 'ctxgate_http_connections') <= N + 1, 'the limit holds');
        await waitFor(() => idle.filter(isClosed).length >= 20, { timeoutMs: 10000, what: 'idle sockets closed' });
      }
    )
  );
});

function within(p, ms, what) {
  let t;
  return Promise.race([p.finally(() => clearTimeout(t)), new Promise((_, rej) => (t = setTimeout(() => rej(new Error(`${what}: not within ${ms} ms`)), ms)))]);
}

describe('slowloris', () => {
  let gw;
  before(async () => {
    gw = await startGateway({ manifests: manifest(100) });
  });
  after(async () => {
    if (gw) await gw.stop();
  });

  test(
    'headers dripped a byte at a time get 408 at the header timeout (10 s), not a connection held forever',
    { timeout: 60000 },
    withLogs(
      () => gw,
      async () => {
        const s = await idleSocket(gw.port);
        const head = `POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n${'X-Drip: ' + 'a'.repeat(400)}`;
        let i = 0;
        const drip = setInterval(() => {
          if (!isClosed(s) && i < head.length) s.write(head[i++]);
        }, 250);
        try {
          await within(s.gone, 30000, 'the dripping connection is answered and closed');
        } finally {
          clearInterval(drip);
        }
        assert.match(s.received, /^HTTP\/1\.1 408 /);
        assert.match(s.received, /"code":"request_timeout"/);
        assert.ok(i > 20, `the client kept dripping (${i} bytes) and was still cut off`);
      }
    )
  );
});
