// sse-client.cjs — streaming client for bench/stream.sh: runs STREAMS streamed requests against
// PORT, CONCURRENCY at a time, and writes for every content chunk that carries sse-mock.cjs's
// timestamp the delay from the mock's write to this client's read, in µs, one per line to OUT.
// FAMILY openai (default) posts /v1/chat/completions and reads chat.completion.chunk deltas up to
// [DONE]; anthropic posts /v1/messages and reads text_delta events up to message_stop. Exits
// non-zero when a stream fails or carries no timestamped chunk.
// Usage: node sse-client.cjs PORT STREAMS CONCURRENCY OUT [API_KEY] [FAMILY] [MODEL]
'use strict';
const http = require('http');
const fs = require('fs');
const [port, streams, concurrency] = process.argv.slice(2, 5).map(Number);
const out = process.argv[5];
const key = process.argv[6] || 'sk-bench';
const family = process.argv[7] || 'openai';
const model = process.argv[8] || 'gpt-4o-mini';
const anthropic = family === 'anthropic';
const path = anthropic ? '/v1/messages' : '/v1/chat/completions';
const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
const delays = [];
const body = JSON.stringify({ model, stream: true, ...(anthropic ? { max_tokens: 256 } : {}),
  messages: [{ role: 'user', content: 'Tell me about Paris in twenty short pieces.' }] });

function one() {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'POST', path, agent,
      headers: { 'Content-Type': 'application/json', 'Authorization': 'Bearer ' + key,
        'Content-Length': Buffer.byteLength(body) } }, (res) => {
      if (res.statusCode !== 200) {
        let e = '';
        res.on('data', (d) => { e += d; });
        res.on('end', () => reject(new Error(`HTTP ${res.statusCode}: ${e.slice(0, 300)}`)));
        return;
      }
      res.setEncoding('utf8');
      let pending = '';
      let seen = 0;
      let done = false;
      res.on('data', (d) => {
        const now = process.hrtime.bigint(); // read time of this network read
        pending += d;
        let cut;
        while ((cut = pending.search(/\r?\n\r?\n/)) >= 0) {
          const event = pending.slice(0, cut);
          pending = pending.slice(cut).replace(/^\r?\n\r?\n/, '');
          for (const line of event.split(/\r?\n/)) {
            if (!line.startsWith('data:')) continue;
            const data = line.slice(5).trim();
            if (data === '[DONE]') { done = true; continue; }
            let j;
            try { j = JSON.parse(data); } catch (e) { continue; }
            if (anthropic && j.type === 'message_stop') { done = true; continue; }
            const c = anthropic ? (j.type === 'content_block_delta' && j.delta && j.delta.text)
              : (j.choices && j.choices[0] && j.choices[0].delta && j.choices[0].delta.content);
            const m = typeof c === 'string' && /t(\d+)/.exec(c);
            if (!m) continue;
            delays.push(Number(now - BigInt(m[1])) / 1000);
            seen++;
          }
        }
      });
      res.on('end', () => (seen && done ? resolve() : reject(new Error(`stream ended with ${seen} timestamped chunks, end seen ${done}`))));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function main() {
  let next = 0;
  const worker = async () => { while (next < streams) { next++; await one(); } };
  await Promise.all(Array.from({ length: concurrency }, worker));
  fs.writeFileSync(out, delays.map((d) => d.toFixed(1)).join('\n') + '\n');
  agent.destroy();
}
main().catch((e) => { console.error('sse-client: ' + e.message); process.exit(1); });
