// Enqueue N no-op BullMQ jobs with Queue.addBulk (1000 per call), for queue_bench.py.
// Copied from the peer harness's bullmq-node/enqueue.js (shared/bench/peers), which mirrors
// its Python bullmq enqueue (peers/enqueue.py): one warm-up add, then addBulk of the other
// N-1, rate scaled by N/(N-1). Only the addBulk loop is timed. The only change: the Redis
// db number is taken from PEERBENCH_REDIS_URL too.
// usage: node enqueue.js N [roc]    (roc: jobs carry removeOnComplete: true)
// Prints one JSON line: lib, n, seconds, rate, method, waiting.
'use strict';
const { Queue } = require('bullmq');
const { performance } = require('node:perf_hooks');

const CHUNK = 1000;
const N = parseInt(process.argv[2], 10);
const ROC = process.argv[3] === 'roc';
const u = new URL(process.env.PEERBENCH_REDIS_URL);
const connection = { host: u.hostname, port: Number(u.port), db: Number(u.pathname.slice(1)) || 0 };
const jobOpts = ROC ? { removeOnComplete: true } : undefined;

function payload(i) {
  return { i, op: 'noop', src: 'media/clip_' + String(i).padStart(6, '0') + '.mp4' };
}

async function main() {
  const q = new Queue('peerq', { connection });
  await q.add('noop', payload(-1), jobOpts); // warm-up: connect, load scripts
  const t0 = performance.now();
  for (let s = 0; s < N - 1; s += CHUNK) {
    const jobs = [];
    for (let i = s; i < Math.min(N - 1, s + CHUNK); i++) {
      jobs.push(jobOpts ? { name: 'noop', data: payload(i), opts: jobOpts } : { name: 'noop', data: payload(i) });
    }
    await q.addBulk(jobs);
  }
  const dt = ((performance.now() - t0) / 1000) * N / (N - 1);
  const waiting = await q.getWaitingCount();
  await q.close();
  console.log(JSON.stringify({ lib: 'bullmq-node', n: N, seconds: dt, rate: N / dt,
    method: `Queue.addBulk, ${CHUNK} per call` + (ROC ? ', removeOnComplete: true' : ''), waiting }));
}
main().catch((e) => { console.error(e); process.exit(1); });
