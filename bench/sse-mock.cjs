// sse-mock.cjs — mock upstream for bench/stream.sh: answers every POST .../chat/completions with
// "stream": true by an OpenAI SSE stream of CHUNKS content deltas, and every POST .../v1/messages
// with "stream": true by an Anthropic Messages event stream (message_start, content_block_start,
// CHUNKS text_delta events, content_block_stop, message_delta, message_stop), one delta every
// INTERVAL_MS, each carrying the CLOCK_MONOTONIC time (ns) it was written, so a client on the same
// host can tell how long each chunk took to reach it (directly, through a proxy, or translated).
// Usage: node sse-mock.cjs PORT [CHUNKS=20] [INTERVAL_MS=20]
'use strict';
const http = require('http');
const port = Number(process.argv[2] || 18082);
const chunks = Number(process.argv[3] || 20);
const intervalMs = Number(process.argv[4] || 20);

function chunk(model, delta, finish) {
  return 'data: ' + JSON.stringify({
    id: 'chatcmpl-stream-bench', object: 'chat.completion.chunk', created: 1700000000, model,
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
  }) + '\n\n';
}

function event(name, data) {
  return `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;
}

// the Anthropic Messages stream, as the API documents it
function anthropic(res, j) {
  const model = j.model || 'claude-sonnet-4-5';
  res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
  res.socket.setNoDelay(true);
  res.write(event('message_start', { type: 'message_start', message: { id: 'msg_stream_bench', type: 'message',
    role: 'assistant', model, content: [], stop_reason: null, stop_sequence: null,
    usage: { input_tokens: 10, output_tokens: 1 } } }));
  res.write(event('content_block_start', { type: 'content_block_start', index: 0,
    content_block: { type: 'text', text: '' } }));
  let i = 0;
  const send = () => {
    if (res.destroyed) return;
    if (i < chunks) {
      const text = 't' + process.hrtime.bigint().toString() + ' ';
      res.write(event('content_block_delta', { type: 'content_block_delta', index: 0,
        delta: { type: 'text_delta', text } }));
      i++;
      setTimeout(send, intervalMs);
      return;
    }
    res.write(event('content_block_stop', { type: 'content_block_stop', index: 0 }));
    res.write(event('message_delta', { type: 'message_delta',
      delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: chunks } }));
    res.end(event('message_stop', { type: 'message_stop' }));
  };
  send();
}

const server = http.createServer((req, res) => {
  let body = '';
  req.on('data', (d) => { body += d; });
  req.on('end', () => {
    let j = {};
    try { j = JSON.parse(body || '{}'); } catch (e) { /* answered as non-streamed below */ }
    if (j.stream && req.url.endsWith('/v1/messages')) { anthropic(res, j); return; }
    const model = j.model || 'gpt-4o-mini';
    if (!j.stream) {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ id: 'chatcmpl-bench', object: 'chat.completion', created: 1700000000, model,
        choices: [{ index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }],
        usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 } }));
      return;
    }
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
    res.socket.setNoDelay(true);
    let i = 0;
    const send = () => {
      if (res.destroyed) return;
      if (i < chunks) {
        // the timestamp is taken right before the write: what follows is the path's delay
        const delta = { content: 't' + process.hrtime.bigint().toString() + ' ' };
        if (i === 0) delta.role = 'assistant';
        res.write(chunk(model, delta, null));
        i++;
        setTimeout(send, intervalMs);
        return;
      }
      res.write(chunk(model, {}, 'stop'));
      if (j.stream_options && j.stream_options.include_usage) {
        res.write('data: ' + JSON.stringify({ id: 'chatcmpl-stream-bench', object: 'chat.completion.chunk',
          created: 1700000000, model, choices: [],
          usage: { prompt_tokens: 10, completion_tokens: chunks, total_tokens: 10 + chunks } }) + '\n\n');
      }
      res.end('data: [DONE]\n\n');
    };
    send();
  });
});
server.keepAliveTimeout = 60000;
server.listen(port, '127.0.0.1', () => console.error(`sse-mock listening on ${port}`));
