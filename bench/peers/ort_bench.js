// ONNX Runtime side of the peer benchmark (npm onnxruntime-node, installed with
// `npm install --ignore-scripts` in bench/peers): inference latency of an ONNX
// file exported by export_onnx.py.
//
// usage: node ort_bench.js MODEL.onnx --batch B --threads T [--reps N] [--warmup N]
// Prints one JSON line: {"runtime": "onnxruntime", "version", "times_ms": [...]}.
// Precisions live in export_onnx.py (EXPORTS: how each .onnx is made); this
// script runs whatever graph it is given, with SESSION_OPTIONS below.
'use strict';
const ort = require('onnxruntime-node');

function parseArgs(argv) {
  const a = { model: null, batch: 0, threads: 0, reps: 5, warmup: 2, seed: 0 };
  for (let i = 0; i < argv.length; ++i) {
    const k = argv[i];
    if (!k.startsWith('--')) { a.model = k; continue; }
    const name = k.slice(2);
    if (!(name in a)) throw new Error(`ort_bench.js: unknown flag ${k}`);
    const v = Number(argv[++i]);
    if (!Number.isInteger(v) || v < 0) throw new Error(`ort_bench.js: ${k} needs a non-negative integer`);
    a[name] = v;
  }
  if (!a.model || a.batch < 1 || a.threads < 1) throw new Error('usage: node ort_bench.js MODEL.onnx --batch B --threads T [--reps N] [--warmup N]');
  return a;
}

function sessionOptions(threads) {
  return {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  };
}

// Deterministic N(0, 1) inputs (Box-Muller over a 32-bit LCG).
function randomInput(n, seed) {
  let s = (seed * 2654435761 + 1) >>> 0;
  const u = () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return (s + 0.5) / 4294967296; };
  const x = new Float32Array(n);
  for (let i = 0; i < n; ++i) x[i] = Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
  return x;
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const session = await ort.InferenceSession.create(a.model, sessionOptions(a.threads));
  const name = session.inputNames[0];
  const meta = session.inputMetadata && session.inputMetadata[0];  // static shape, from export_onnx.py
  const shape = meta && meta.shape ? meta.shape.map(Number) : null;
  if (!shape || shape.some((d) => !Number.isInteger(d) || d < 1)) throw new Error('ort_bench.js: the model needs a static input shape (export_onnx.py writes one)');
  if (shape[0] !== a.batch) throw new Error(`ort_bench.js: the model's batch is ${shape[0]}, not ${a.batch}`);
  const n = shape.reduce((p, d) => p * d, 1);
  const feeds = { [name]: new ort.Tensor('float32', randomInput(n, a.seed), shape) };
  const times = [];
  for (let i = 0; i < a.warmup + a.reps; ++i) {
    const t0 = process.hrtime.bigint();
    await session.run(feeds);
    const dt = Number(process.hrtime.bigint() - t0) / 1e6;
    if (i >= a.warmup) times.push(dt);
  }
  console.log(JSON.stringify({ runtime: 'onnxruntime', version: ort.env.versions.node || ort.env.versions.common, threads: a.threads, times_ms: times }));
}

main().catch((e) => { console.error(String(e && e.stack || e)); process.exit(1); });
