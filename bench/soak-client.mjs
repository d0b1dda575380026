// soak-client.mjs — the node half of bench/soak.sh's load: what wrk cannot do.
//   * an upstream that answers every request with OpenAI's 500 error JSON (the gateway's
//     "broken" target), on ERR_PORT;
//   * CLIENTS loops sending, in turn: a context turn (X-Conversation-Id cycling over CONVS ids,
//     Memory store), non-streamed and streamed; a stream the client aborts after its first
//     chunk, on the plain route and on the context route.
// It runs until SIGTERM/SIGINT (or SECONDS elapse), then prints one JSON line of counts (status
// per kind, aborts, connection errors) to stdout and exits 0 — or 1 when a request got an
// answer that is not what its kind expects (a 5xx on a context turn, a connection error...).
// Usage: node bench/soak-client.mjs GATEWAY_URL ERR_PORT [SECONDS=600] [CLIENTS=4] [CONVS=1000]
import http from 'node:http';

const [gatewayURL, errPortArg, secondsArg, clientsArg, convsArg] = process.argv.slice(2);
if (!gatewayURL || !errPortArg) {
  console.error('usage: node soak-client.mjs GATEWAY_URL ERR_PORT [SECONDS] [CLIENTS] [CONVS]');
  process.exit(2);
}
const seconds = Number(secondsArg || 600);
const clients = Number(clientsArg || 4);
const convs = Number(convsArg || 1000);
const gw = new URL(gatewayURL);

// ---- the 500 upstream ----
const errBody = JSON.stringify({
  error: { message: 'The server had an error while processing your request. Sorry about that!', type: 'server_error', param: null, code: null },
});
const errServer = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(500, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(errBody) });
    res.end(errBody);
  });
});
errServer.keepAliveTimeout = 60000;
await new Promise((r) => errServer.listen(Number(errPortArg), '127.0.0.1', r));

// ---- the clients ----
const agent = new http.Agent({ keepAlive: true, maxSockets: clients * 2 });
const counts = {}; // kind -> {status: n}
let unexpected = 0;
const unexpectedSamples = [];
const count = (kind, what) => {
  counts[kind] ??= {};
  counts[kind][what] = (counts[kind][what] || 0) + 1;
};
const bad = (kind, what) => {
  unexpected++;
  if (unexpectedSamples.length < 10) unexpectedSamples.push(`${kind}: ${what}`);
};

/** POST; resolves {status, text} when done, or {status, aborted: true} when abortAfterFirstChunk. */
function post(path, body, headers, { abortAfterFirstChunk = false } = {}) {
  return new Promise((resolve) => {
    const payload = JSON.stringify(body);
    const req = http.request(
      {
        host: gw.hostname,
        port: gw.port,
        path,
        method: 'POST',
        agent: abortAfterFirstChunk ? false : agent, // an aborted connection is not reused
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload), ...headers },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d) => {
          text += d;
          if (abortAfterFirstChunk && text.includes('\n\n') && res.statusCode === 200) {
            req.destroy();
            resolve({ status: res.statusCode, aborted: true });
          }
        });
        res.on('end', () => resolve({ status: res.statusCode, text }));
        res.on('error', () => resolve({ status: res.statusCode, text, cut: true }));
      }
    );
    req.setTimeout(30000, () => req.destroy(new Error('timeout')));
    req.on('error', (err) => resolve({ error: err.code || err.message }));
    req.end(payload);
  });
}

let running = true;
const deadline = Date.now() + seconds * 1000;
let convSeq = 0;
const nextConv = () => `soak-${convSeq++ % convs}`;
const chat = (model, stream, content) => ({ model, stream, messages: [{ role: 'user', content }] });

async function loop(k) {
  for (let n = 0; running && Date.now() < deadline; n++) {
    const step = (n + k) % 4;
    if (step === 0 || step === 1) {
      const stream = step === 1;
      const kind = stream ? 'context-stream' : 'context';
      const r = await post('/ctx/v1/chat/completions', chat(stream ? 'sse' : 'plain', stream, `turn ${n} of client ${k}`), {
        'x-conversation-id': nextConv(),
      });
      count(kind, r.error || r.status);
      // 409: two clients met on one conversation id (they cycle over the same ids) — an answer
      if (r.error || (r.status !== 200 && r.status !== 409)) bad(kind, r.error || `${r.status} ${r.text}`);
      else if (r.status === 200 && stream && !r.text.includes('data: [DONE]')) bad(kind, `no [DONE]: ${r.text}`);
    } else {
      const ctx = step === 3;
      const kind = ctx ? 'abort-context-stream' : 'abort-stream';
      const r = await post(
        ctx ? '/ctx/v1/chat/completions' : '/v1/chat/completions',
        chat('sse', true, `abort me ${n}`),
        ctx ? { 'x-conversation-id': nextConv() } : {},
        { abortAfterFirstChunk: true }
      );
      count(kind, r.aborted ? 'aborted' : r.error || r.status);
      if (!r.aborted && r.status !== 409) bad(kind, r.error || `${r.status} (not aborted) ${r.text}`);
    }
  }
}

const stop = () => {
  running = false;
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
await Promise.all(Array.from({ length: clients }, (_, k) => loop(k)));
agent.destroy();
errServer.close();
console.log(JSON.stringify({ counts, unexpected, unexpectedSamples }));
process.exit(unexpected ? 1 : 0);
