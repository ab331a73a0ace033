// ONNX Runtime logits for preprocessed inputs (npm onnxruntime-node): the
// accuracy side of the peer comparison (int8_accuracy.py, the int8 export test).
//
// usage: node ort_predict.js MODEL.onnx --input X.npy -o LOGITS.npy [--threads T]
//   X.npy: N x C x H x W float32 (C order, little-endian), as `vitkit predict --input` reads.
//   The model's static batch B (export_onnx.py --batch B) is run ceil(N / B) times, the last
//   batch padded with zeros; LOGITS.npy is N x classes float32.
// Session options as ort_bench.js (all graph optimisations).
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

function readNpy(path) {
  const buf = fs.readFileSync(path);
  if (buf.toString('latin1', 1, 6) !== 'NUMPY') throw new Error(`${path}: not a .npy file`);
  const major = buf[6];
  const hlen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const hstart = major === 1 ? 10 : 12;
  const header = buf.toString('latin1', hstart, hstart + hlen);
  if (!/'descr':\s*'<f4'/.test(header) || /'fortran_order':\s*True/.test(header)) {
    throw new Error(`${path}: needs little-endian float32 in C order (${header.trim()})`);
  }
  const shape = header.match(/'shape':\s*\(([^)]*)\)/)[1].split(',').map((s) => s.trim()).filter((s) => s).map(Number);
  const off = hstart + hlen;
  const n = shape.reduce((p, d) => p * d, 1);
  if (buf.length - off < 4 * n) throw new Error(`${path}: truncated`);
  const data = new Float32Array(buf.buffer.slice(buf.byteOffset + off, buf.byteOffset + off + 4 * n));
  return { shape, data };
}

function writeNpy(path, shape, data) {
  let h = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  const total = 10 + h.length + 1;
  h += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const head = Buffer.alloc(10);
  head.write('\x93NUMPY', 0, 'latin1');
  head[6] = 1; head[7] = 0;
  head.writeUInt16LE(h.length, 8);
  fs.writeFileSync(path + '.tmp', Buffer.concat([head, Buffer.from(h, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
  fs.renameSync(path + '.tmp', path);
}

async function main() {
  const argv = process.argv.slice(2);
  const a = { model: null, input: null, output: null, threads: 2 };
  for (let i = 0; i < argv.length; ++i) {
    const k = argv[i];
    if (k === '--input') a.input = argv[++i];
    else if (k === '-o' || k === '--output') a.output = argv[++i];
    else if (k === '--threads') a.threads = Number(argv[++i]);
    else if (!k.startsWith('-')) a.model = k;
    else throw new Error(`ort_predict.js: unknown flag ${k}`);
  }
  if (!a.model || !a.input || !a.output || !(a.threads >= 1)) {
    throw new Error('usage: node ort_predict.js MODEL.onnx --input X.npy -o LOGITS.npy [--threads T]');
  }
  const session = await ort.InferenceSession.create(a.model, {
    intraOpNumThreads: a.threads, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all',
  });
  const shape = session.inputMetadata[0].shape.map(Number);
  const x = readNpy(a.input);
  if (x.shape.length !== shape.length || x.shape.slice(1).some((d, i) => d !== shape[i + 1])) {
    throw new Error(`ort_predict.js: input shape ${x.shape} does not fit the model's ${shape}`);
  }
  const B = shape[0], N = x.shape[0], per = x.data.length / N;
  let logits = null, classes = 0;
  for (let s = 0; s < N; s += B) {
    const chunk = new Float32Array(B * per);
    chunk.set(x.data.subarray(s * per, Math.min(N, s + B) * per));
    const out = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', chunk, shape) });
    const y = out[session.outputNames[0]];
    if (!logits) { classes = y.dims[1]; logits = new Float32Array(N * classes); }
    logits.set(y.data.subarray(0, (Math.min(N, s + B) - s) * classes), s * classes);
  }
  writeNpy(a.output, [N, classes], logits);
}

main().catch((e) => { console.error(String(e && e.stack || e)); process.exit(1); });
