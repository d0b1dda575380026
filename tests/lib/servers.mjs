// servers.mjs — real Redis and PostgreSQL servers for integration tests, each on a free loopback
// port with a private temporary data directory (the node twin of tests/unit/context/testsrv.c).
//
//   const redis = await startRedis();              // redis.url  "redis://127.0.0.1:PORT/0"
//   const pg = await startPostgres();              // pg.dsn     "postgresql://postgres@127.0.0.1:PORT/postgres"
//   await redis.command('DBSIZE')                  // one command over RESP (no client library needed)
//   await pg.sql('SELECT count(*) FROM ctx_conversations')   // psql, tuples only, unaligned
//   const session = pg.psqlSession()               // a psql child process to hold a transaction open
//   await redis.restart(); await pg.restart();     // same port and data directory
//   await redis.freeze(); await redis.thaw();      // SIGSTOP / SIGCONT: a server that hangs (pg too)
//   await redis.stop(); await pg.stop();           // always, in an `after` hook; safe to call twice
//   const hole = await startBlackhole();           // hole.port: a TCP connect there never completes
//   await hole.close();
//
// Redis runs with persistence off (no RDB, no AOF): what it holds is gone when it stops — unless
// started with {persist: true}: then every write is in its append-only file (appendfsync always)
// before Redis answers it, and restart() (even after halt()'s SIGKILL) loads it back.
// PostgreSQL comes from initdb/pg_ctl under /usr/lib/postgresql/*/bin (the newest version), runs
// as the `postgres` user when we are root (it refuses to run as root), listens on 127.0.0.1 only
// with its Unix socket inside the temporary directory, trust authentication, fsync off.
// Servers still running when the process exits (a test forgot its after hook, or crashed) are
// stopped from an exit hook.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import { freePort } from './gateway.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const running = new Set(); // {emergencyStop()} of every server not yet stopped

function emergencyStopAll() {
  for (const s of [...running]) {
    try {
      s.emergencyStop();
    } catch {
      /* best effort: the process is going away */
    }
  }
}
process.on('exit', emergencyStopAll);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => {
    emergencyStopAll();
    process.exit(128 + (sig === 'SIGINT' ? 2 : 15));
  });
}

function makeTempDir(tag) {
  return fs.mkdtempSync(path.join(os.tmpdir(), `ctxgate-${tag}-`));
}

function removeDir(dir) {
  try {
    fs.rmSync(dir, { recursive: true, force: true });
  } catch {
    /* best effort */
  }
}

/** True when something accepts TCP connections on 127.0.0.1:port. */
function portOpen(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

// ---- RESP (enough for test inspection: commands out, any reply in) ----

function encodeCommand(args) {
  let out = `*${args.length}\r\n`;
  for (const a of args) {
    const s = String(a);
    out += `$${Buffer.byteLength(s)}\r\n${s}\r\n`;
  }
  return out;
}

/** Parses one RESP reply at buf[pos..]; returns {value, pos} or null when incomplete. */
function parseReply(buf, pos = 0) {
  const eol = buf.indexOf('\r\n', pos);
  if (eol < 0) return null;
  const type = String.fromCharCode(buf[pos]);
  const line = buf.toString('utf8', pos + 1, eol);
  const next = eol + 2;
  switch (type) {
    case '+':
      return { value: line, pos: next };
    case '-':
      return { value: new Error(line), pos: next };
    case ':':
      return { value: Number(line), pos: next };
    case '$': {
      const n = Number(line);
      if (n < 0) return { value: null, pos: next };
      if (buf.length < next + n + 2) return null;
      return { value: buf.toString('utf8', next, next + n), pos: next + n + 2 };
    }
    case '*': {
      const n = Number(line);
      if (n < 0) return { value: null, pos: next };
      const arr = [];
      let p = next;
      for (let i = 0; i < n; i++) {
        const r = parseReply(buf, p);
        if (!r) return null;
        arr.push(r.value);
        p = r.pos;
      }
      return { value: arr, pos: p };
    }
    default:
      throw new Error(`unexpected RESP reply type ${JSON.stringify(type)}`);
  }
}

/** Sends one command to a Redis server and resolves with its reply (an error reply rejects). */
export function redisCommand(port, args, { password } = {}) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    let buf = Buffer.alloc(0);
    const expected = password ? 2 : 1;
    const replies = [];
    s.setTimeout(10000, () => s.destroy(new Error(`redis on port ${port} did not answer ${args[0]}`)));
    s.once('error', reject);
    s.on('connect', () => {
      if (password) s.write(encodeCommand(['AUTH', password]));
      s.write(encodeCommand(args));
    });
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const r = parseReply(buf);
        if (!r) break;
        replies.push(r.value);
        buf = buf.subarray(r.pos);
      }
      if (replies.length >= expected) {
        s.destroy();
        const v = replies[expected - 1];
        if (v instanceof Error) reject(v);
        else resolve(v);
      }
    });
  });
}

// ---- Redis ----

/**
 * Starts redis-server on a free loopback port, persistence off (on with persist: true).
 * @param {{password?: string, db?: number, persist?: boolean}} [o]
 */
export async function startRedis(o = {}) {
  const dir = makeTempDir('redis');
  const db = o.db || 0;
  let proc = null;
  let port = 0;
  let log = '';

  async function spawnOn(p) {
    const args = ['--port', String(p), '--bind', '127.0.0.1', '--save', '',
      '--appendonly', o.persist ? 'yes' : 'no', '--dir', dir, '--daemonize', 'no'];
    if (o.persist) args.push('--appendfsync', 'always');
    if (o.password) args.push('--requirepass', o.password);
    const child = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let exited = false;
    let spawnError = null;
    child.on('error', (err) => (spawnError = err));
    child.on('exit', () => (exited = true));
    child.stdout.on('data', (d) => (log += d));
    child.stderr.on('data', (d) => (log += d));
    const exitPromise = new Promise((r) => child.once('close', r));
    child.exitPromise = exitPromise;
    for (let i = 0; i < 400; i++) {
      if (spawnError) throw new Error(`cannot run redis-server: ${spawnError.message} (install the redis-server package)`);
      if (exited) return null;
      if (await portOpen(p)) {
        try {
          if ((await redisCommand(p, ['PING'], { password: o.password })) === 'PONG') return child;
        } catch {
          /* still loading */
        }
      }
      await sleep(25);
    }
    child.kill('SIGKILL');
    return null;
  }

  const srv = {
    kind: 'redis',
    dir,
    get port() {
      return port;
    },
    get url() {
      return `redis://127.0.0.1:${port}/${db}`;
    },
    get running() {
      return proc !== null;
    },
    logs: () => log,
    command: (...args) => redisCommand(port, args, { password: o.password }),
    /** SIGSTOP: the server keeps its connections but answers nothing (a hung server). */
    async freeze() {
      if (proc) proc.kill('SIGSTOP');
    },
    /** SIGCONT after freeze(): it answers again, queued commands included. */
    async thaw() {
      if (proc) proc.kill('SIGCONT');
    },
    /** Stops the server with SIGKILL (its data is gone, unless started with persist: true). */
    async halt() {
      if (!proc) return;
      const p = proc;
      proc = null;
      p.kill('SIGCONT'); // a frozen server dies too
      p.kill('SIGKILL');
      await p.exitPromise;
    },
    /** Stops and starts again on the same port and directory. */
    async restart() {
      await srv.halt();
      for (let i = 0; i < 100; i++) {
        // the old listening socket may linger for a moment
        proc = await spawnOn(port);
        if (proc) return;
        await sleep(50);
      }
      throw new Error(`redis-server did not restart on port ${port}\n${log}`);
    },
    async stop() {
      await srv.halt();
      running.delete(srv);
      removeDir(dir);
    },
    emergencyStop() {
      if (proc) {
        proc.kill('SIGCONT');
        proc.kill('SIGKILL');
      }
      removeDir(dir);
    },
  };
  running.add(srv);
  try {
    for (let attempt = 0; attempt < 5 && !proc; attempt++) {
      port = await freePort();
      proc = await spawnOn(port);
    }
  } catch (err) {
    await srv.stop();
    throw err;
  }
  if (!proc) {
    await srv.stop();
    throw new Error(`redis-server did not start\n${log}`);
  }
  return srv;
}

// ---- PostgreSQL ----

/** The bin directory of the newest PostgreSQL under /usr/lib/postgresql, or null. */
export function postgresBinDir() {
  const root = '/usr/lib/postgresql';
  let versions;
  try {
    versions = fs.readdirSync(root);
  } catch {
    return null;
  }
  const found = versions
    .filter((v) => fs.existsSync(path.join(root, v, 'bin', 'initdb')))
    .sort((a, b) => Number(a) - Number(b) || a.localeCompare(b));
  return found.length ? path.join(root, found[found.length - 1], 'bin') : null;
}

const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;

/** argv run as the postgres user when we are root (PostgreSQL refuses to run as root). */
function pgArgv(argv) {
  return asRoot ? ['runuser', ['-u', 'postgres', '--', ...argv]] : [argv[0], argv.slice(1)];
}

function runSync(argv, { timeoutMs = 60000 } = {}) {
  const [cmd, args] = pgArgv(argv);
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs });
  return { code: r.status, out: `${r.stdout || ''}${r.stderr || ''}${r.error ? r.error.message : ''}` };
}

function run(argv, { timeoutMs = 60000 } = {}) {
  const [cmd, args] = pgArgv(argv);
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ code: -1, out: out + err.message });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

/** Starts a private PostgreSQL cluster on a free loopback port. */
export async function startPostgres() {
  const bin = postgresBinDir();
  if (!bin) {
    throw new Error('PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); install the postgresql package');
  }
  const dir = makeTempDir('pg');
  const data = path.join(dir, 'data');
  const logFile = path.join(dir, 'server.log');
  let port = 0;
  let isRunning = false;
  let frozen = [];

  // the postmaster (first line of postmaster.pid) and its children (backends, background workers)
  const clusterPids = () => {
    let master;
    try {
      master = Number(fs.readFileSync(path.join(data, 'postmaster.pid'), 'utf8').split('\n')[0]);
    } catch {
      return [];
    }
    const r = spawnSync('pgrep', ['-P', String(master)], { encoding: 'utf8' });
    return [master, ...String(r.stdout || '').split('\n').filter(Boolean).map(Number)];
  };
  const signalPid = (pid, sig) => {
    try {
      process.kill(pid, sig);
    } catch {
      /* gone */
    }
  };

  const readLog = () => {
    try {
      return fs.readFileSync(logFile, 'utf8');
    } catch {
      return '';
    }
  };

  async function pgCtlStart(p) {
    const opts = `-k ${dir} -p ${p} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off`;
    const r = await run([path.join(bin, 'pg_ctl'), '-D', data, '-l', logFile, '-o', opts, '-w', '-t', '60', 'start']);
    return r.code === 0;
  }

  const srv = {
    kind: 'postgresql',
    dir,
    get port() {
      return port;
    },
    get dsn() {
      return `postgresql://postgres@127.0.0.1:${port}/postgres`;
    },
    get running() {
      return isRunning;
    },
    logs: readLog,
    /** Runs SQL with psql (tuples only, unaligned, `|` separated); resolves with the output text. */
    async sql(query) {
      const r = await run(['psql', '-X', '-q', '-t', '-A', '-h', '127.0.0.1', '-p', String(port), '-U', 'postgres',
        '-d', 'postgres', '-v', 'ON_ERROR_STOP=1', '-c', query]);
      if (r.code !== 0) throw new Error(`psql failed (${r.code}): ${r.out}`);
      return r.out.trim();
    },
    /**
     * An interactive psql session (a child process: write SQL to its stdin, read its stdout;
     * tuples only, unaligned). For tests that must hold a transaction open, e.g. a lock.
     */
    psqlSession() {
      return spawn('psql', ['-X', '-q', '-t', '-A', '-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-d', 'postgres'], {
        stdio: ['pipe', 'pipe', 'pipe'],
      });
    },
    /**
     * SIGSTOP to the postmaster and every backend: connections stay open, nothing is answered
     * (a hung server). thaw() sends SIGCONT to the same processes.
     */
    async freeze() {
      if (!isRunning) return;
      frozen = clusterPids();
      for (const pid of frozen) signalPid(pid, 'SIGSTOP');
    },
    async thaw() {
      for (const pid of frozen) signalPid(pid, 'SIGCONT');
      frozen = [];
    },
    /** Stops the server at once (-m immediate: what a crash looks like to clients). */
    async halt() {
      await srv.thaw();
      if (!isRunning) return;
      isRunning = false;
      await run([path.join(bin, 'pg_ctl'), '-D', data, '-m', 'immediate', '-w', 'stop']);
    },
    async restart() {
      await srv.halt();
      if (!(await pgCtlStart(port))) throw new Error(`PostgreSQL did not restart on port ${port}\n${readLog()}`);
      isRunning = true;
    },
    async stop() {
      await srv.halt();
      running.delete(srv);
      removeDir(dir);
    },
    emergencyStop() {
      for (const pid of frozen) signalPid(pid, 'SIGCONT');
      if (isRunning) runSync([path.join(bin, 'pg_ctl'), '-D', data, '-m', 'immediate', '-w', 'stop'], { timeoutMs: 20000 });
      isRunning = false;
      removeDir(dir);
    },
  };
  running.add(srv);
  try {
    if (asRoot) {
      const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
      const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
      fs.chownSync(dir, uid, gid);
    }
    const init = await run([path.join(bin, 'initdb'), '-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8']);
    if (init.code !== 0) throw new Error(`initdb into ${data} failed (${init.code}):\n${init.out}`);
    for (let attempt = 0; attempt < 5 && !isRunning; attempt++) {
      port = await freePort();
      isRunning = await pgCtlStart(port);
    }
    if (!isRunning) throw new Error(`pg_ctl start failed\n${readLog()}`);
  } catch (err) {
    await srv.stop();
    throw err;
  }
  return srv;
}

// ---- a port where connects hang ----

/**
 * A loopback port where a TCP connect never completes, for connect timeouts without leaving
 * loopback: a child process listens with backlog 1 and is stopped (SIGSTOP) so it never accepts;
 * two connections fill its accept queue, and the kernel drops every SYN after them.
 * close() ends it (safe to call twice; also run from the exit hook).
 */
export async function startBlackhole() {
  const child = spawn(
    process.execPath,
    ['-e', "require('net').createServer().listen({port: 0, host: '127.0.0.1', backlog: 1}, function () { console.log(this.address().port) })"],
    { stdio: ['ignore', 'pipe', 'inherit'] }
  );
  const port = await new Promise((resolve, reject) => {
    child.once('error', reject);
    child.stdout.once('data', (d) => resolve(Number(String(d).trim())));
  });
  child.kill('SIGSTOP');
  const fillers = [];
  const srv = {
    port,
    async close() {
      for (const f of fillers) f.destroy();
      if (child.exitCode === null && child.signalCode === null) {
        const gone = new Promise((r) => child.once('close', r));
        child.kill('SIGKILL');
        await gone;
      }
      running.delete(srv);
    },
    emergencyStop() {
      child.kill('SIGKILL');
    },
  };
  running.add(srv);
  // fill the accept queue (its connects complete: the kernel does the handshake), then check
  // that one more connect hangs
  for (let i = 0; ; i++) {
    const s = net.connect({ host: '127.0.0.1', port });
    fillers.push(s);
    s.on('error', () => {});
    const r = await new Promise((resolve) => {
      const t = setTimeout(() => resolve('hang'), 500);
      s.once('connect', () => {
        clearTimeout(t);
        resolve('connected');
      });
    });
    if (r === 'hang') break;
    if (i > 16) {
      await srv.close();
      throw new Error(`startBlackhole: connects to port ${port} keep completing; cannot make them hang`);
    }
  }
  return srv;
}
