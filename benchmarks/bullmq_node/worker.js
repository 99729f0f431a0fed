// One BullMQ (Node) worker process for queue_bench.py: new Worker('peerq', noop,
// {concurrency, connection}). Copied from the peer harness's bullmq-node/worker.js
// (shared/bench/peers); the only change: the Redis db number is taken from the URL too.
// Counts its completions in the peer harness's counter format (peers/peercount.py: a
// 24-byte file <count int64, first_ts double, last_ts double>, wall-clock seconds, named
// <pid>.cnt in $PEERBENCH_COUNT_DIR). The processor records in memory (no syscall, no
// Redis command); the file is rewritten every 10 ms and at exit, so the timestamps are
// exact and only the orchestrator's detection lags. Runs until SIGTERM, then closes the
// worker (the job in hand finishes) and exits 0.
// usage: node worker.js [concurrency=1]
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { performance } = require('node:perf_hooks');
const { Worker } = require('bullmq');

const conc = parseInt(process.argv[2] || '1', 10);
const u = new URL(process.env.PEERBENCH_REDIS_URL);
const connection = { host: u.hostname, port: Number(u.port), db: Number(u.pathname.slice(1)) || 0 };

const fd = fs.openSync(path.join(process.env.PEERBENCH_COUNT_DIR, `${process.pid}.cnt`), 'w+');
const buf = Buffer.alloc(24);
let n = 0, first = 0, last = 0, written = -1;
const now = () => (performance.timeOrigin + performance.now()) / 1000;
function flush() {
  if (written === n) return;
  buf.writeBigInt64LE(BigInt(n), 0);
  buf.writeDoubleLE(first, 8);
  buf.writeDoubleLE(last, 16);
  fs.writeSync(fd, buf, 0, 24, 0);
  written = n;
}
flush();
const timer = setInterval(flush, 10);

const worker = new Worker('peerq', async () => {
  const t = now();
  if (n === 0) first = t;
  last = t;
  n++;
}, { connection, concurrency: conc });
worker.on('error', (e) => console.error('worker error', e));

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  flush();
  try { await worker.close(); } catch (e) { console.error(e); }
  flush();
  clearInterval(timer);
  fs.closeSync(fd);
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
