// The ViT forward pass, for inference and for training (which keeps every
// activation the backward pass needs).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "vitkit/core/tensor.h"
#include "vitkit/model/vit.h"

namespace vitkit {

// Activations of one forward pass. In training mode every block has its own
// buffers; in inference mode the blocks share one set (and the residual stream
// is updated in place), so memory does not grow with depth.
class Acts {
 public:
  // Sizes the buffers for batch B (reallocating only when they grow).
  void plan(const ViTConfig& cfg, int64_t B, bool train);
  int64_t batch() const { return B_; }
  bool train() const { return train_; }

  // (B*P, K) patches; (B*P, D) patch embeddings.
  float* cols() { return buf(cols_); }
  float* emb() { return buf(emb_); }
  // Residual stream entering block l (l = depth: the encoder's output), (B, T, D).
  float* stream(int l) { return buf(stream_) + (train_ ? l : 0) * btd_; }
  // Per block l:
  float* ln1(int l) { return blk(ln1_, l); }    // (B, T, D) first norm's output
  float* ln1_mean(int l) { return blk(ln1m_, l); }  // (B*T)
  float* ln1_rstd(int l) { return blk(ln1r_, l); }  // (B*T)
  float* qkv(int l) { return blk(qkv_, l); }    // (B, T, 3D)
  float* att(int l) { return blk(att_, l); }    // (B, T, D) attention output before out_proj
  float* lse(int l) { return blk(lse_, l); }    // (B, H, T)
  float* res1(int l) { return blk(res1_, l); }  // (B, T, D) x + out_proj(att)
  float* ln2(int l) { return blk(ln2_, l); }    // (B, T, D)
  float* ln2_mean(int l) { return blk(ln2m_, l); }
  float* ln2_rstd(int l) { return blk(ln2r_, l); }
  float* fc1(int l) { return blk(fc1_, l); }    // (B, T, M) before the activation
  float* fc1_act(int l) { return train_ ? blk(fc1a_, l) : fc1(l); }  // (B, T, M)
  float* res2(int l) { return blk(res2_, l); }  // (B, T, D) mid + fc2 (post-norm only)
  // Final norm (B, T, D) and its statistics (B*T), pooled (B, D), logits (B, classes).
  float* lnf() { return buf(lnf_); }
  float* lnf_mean() { return buf(lnfm_); }
  float* lnf_rstd() { return buf(lnfr_); }
  float* pooled() { return buf(pooled_); }
  float* logits() { return buf(logits_); }
  // Dropout (training with cfg.dropout > 0): keep masks of the embeddings
  // (B, T, D) and, per block, of the attention output (B, T, D), the MLP
  // activation (B, T, M) and the MLP output (B, T, D). Null otherwise.
  bool dropout() const { return drop_; }
  uint8_t* mask_emb() { return mbuf(memb_, 0); }
  uint8_t* mask_attn(int l) { return mbuf(mattn_, l); }
  uint8_t* mask_act(int l) { return mbuf(mact_, l); }
  uint8_t* mask_fc2(int l) { return mbuf(mfc2_, l); }
  // Seed of this step's dropout masks (set by the trainer before each step).
  uint64_t dropout_seed = 0;
  // One set per thread for vit_infer's image-parallel mode (kept, like the
  // buffers, so that repeated calls allocate nothing).
  std::vector<Acts> per_thread;

 private:
  struct Slot {
    int64_t offset = 0, size = 0;  // floats; size per block for per-block slots
  };
  float* buf(const Slot& s) { return mem_.f32() + s.offset; }
  float* blk(const Slot& s, int l) { return mem_.f32() + s.offset + (train_ ? l : 0) * s.size; }
  uint8_t* mbuf(const Slot& s, int l) { return drop_ ? masks_.data<uint8_t>() + s.offset + l * s.size : nullptr; }
  Tensor mem_, masks_;
  bool drop_ = false;
  Slot memb_, mattn_, mact_, mfc2_;
  int64_t B_ = 0, btd_ = 0;
  bool train_ = false;
  Slot cols_, emb_, stream_, ln1_, ln1m_, ln1r_, qkv_, att_, lse_, res1_, ln2_, ln2m_, ln2r_, fc1_, fc1a_, res2_,
      lnf_, lnfm_, lnfr_, pooled_, logits_;
};

// Observers of a forward pass (analysis: activation statistics, reuse counts,
// calibration, per-layer error). Unset hooks cost one null check each.
//   on_linear         each linear layer's input X (rows, l.in), just before it runs.
//   on_linear_output  its output Y (rows, l.out) = act(X W^T + b), just after:
//                     the layer's own output, after the activation fused into
//                     it (Linear's definition). So fc1's output is *after* the
//                     model's activation (GELU): exactly fc2's input (before
//                     dropout in training). out_proj and fc2, which add into
//                     the residual stream in inference, are shown
//                     (stream + output) - stream: the output within half an ulp
//                     of the sum (the forward itself is unchanged by the hook).
//   on_attention      each block's packed qkv (B, T, 3 heads head_dim).
//   on_norm           each layer norm's output (rows, D): block >= 0 and
//                     which 1 (ln_1) or 2 (ln_2); block -1 for the final norm
//                     (encoder.ln), which 0.
// Any hook makes inference run every row of every block (no class-token-only
// last block) and sub-batches one after the other.
struct ForwardHooks {
  std::function<void(const Linear& l, const float* X, int64_t rows)> on_linear;
  std::function<void(const Linear& l, const float* Y, int64_t rows)> on_linear_output;
  std::function<void(int block, const float* qkv, int64_t B)> on_attention;
  std::function<void(int block, int which, const float* Y, int64_t rows)> on_norm;
};

// Runs the model on images (B, C, S, S), already preprocessed. The logits
// (B, classes) are in acts.logits(). acts must be planned for B.
void vit_forward(const ViT& m, const float* images, int64_t B, Acts& acts, const ForwardHooks* hooks = nullptr);

// Inference on N images (N, C, S, S) in equal sub-batches of at most
// max_batch images (sub_batch_size), one after the other through acts
// (planned per sub-batch: its buffers grow once, then are reused): logits
// (N, classes). Small sub-batches keep a block's activations in the caches.
//
// Threads: per op (each op of a sub-batch uses every thread) or per image
// (each thread runs whole sub-batches of its share of the images, every op on
// one thread: no barrier between ops, and each core's activations stay in its
// own cache). Auto: per image when each thread gets at least one full
// sub-batch and no hooks watch. Measured (2 threads, AMD EPYC Zen 3, `vitkit
// bench --parallel op,image`, docs/performance.md): per image 3-14% faster on
// the default model at batch 256 and 1,024, 8% on ViT-B/16 at batch 32.
enum class InferThreads { Auto, PerOp, PerImage };
void vit_infer(const ViT& m, const float* images, int64_t N, int64_t max_batch, Acts& acts, float* logits,
               const ForwardHooks* hooks = nullptr, InferThreads threads = InferThreads::Auto);
// Whether vit_infer runs per image for these arguments with `threads` threads.
bool infer_per_image(int64_t N, int64_t max_batch, int threads, const ForwardHooks* hooks,
                     InferThreads mode);
// "auto", "op", "image"; parse throws UsageError naming `flag` on anything else.
const char* infer_threads_name(InferThreads t);
InferThreads parse_infer_threads(const std::string& s, const std::string& flag);

// The largest sub-batch vit_infer makes of N images with at most max_batch
// each (>= 1): N split into ceil(N / max_batch) sub-batches as equal as possible.
int64_t sub_batch_size(int64_t N, int64_t max_batch);

// Tokens per forward pass that inference aims at by default: at least
// kInferTokens, and at least kInferTokensPerDim x dim, so that a wide model's
// weight matrices (streamed from memory once per pass) serve enough rows.
// Measured (2 threads, AMD EPYC Zen 3, `vitkit bench --sub-batch`,
// docs/performance.md): the default model (50 tokens, dim 128) at batch 256
// takes 13% less time in sub-batches of 20-32 images (1,000-1,600 tokens)
// than in one pass; ViT-B/16 (197 tokens, dim 768) is 2-7% slower in
// sub-batches of 2-4 images than 8 at once, and the same from 8 to 32.
inline constexpr int64_t kInferTokens = 1024;
inline constexpr int64_t kInferTokensPerDim = 4;

// The default sub-batch of inference: the tokens above / tokens per image, at least 1.
int64_t infer_batch(const ViTConfig& c);

// Convenience: logits (B, classes) for images (B, C, S, S), processed in
// sub-batches of at most max_batch images (0: infer_batch(cfg)).
Tensor vit_predict(const ViT& m, const Tensor& images, int64_t max_batch = 0, const ForwardHooks* hooks = nullptr);
// The same through the caller's activations: a loop of calls (evaluation, a
// distillation teacher) allocates and first-touches them once, not per call.
Tensor vit_predict(const ViT& m, const Tensor& images, Acts& acts, int64_t max_batch = 0,
                   const ForwardHooks* hooks = nullptr);

}  // namespace vitkit
