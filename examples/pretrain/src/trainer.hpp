#pragma once
// Training: AdamW (decoupled weight decay on matrices only), or Muon for the hidden matrices with AdamW for the rest
// (REFERENCE §4), with linear warmup and linear decay, global gradient-norm clipping, periodic validation,
// JSON-lines metrics, atomic safetensors checkpoints that resume exactly (parameters, optimizer state, step; the
// data position and the masking RNG are functions of (seed, step)).

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "config.hpp"
#include "data.hpp"
#include "model.hpp"

namespace pretrain {

struct train_options {
  model_config model;  // vocab is taken from the data when 0
  std::int64_t batch = 16, steps = 1000, warmup = 100;
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.98, eps = 1e-8, weight_decay = 0.01, clip = 1.0;
  std::string optimizer = "adamw";  // adamw | muon
  double muon_momentum = 0.95;      // Muon's Nesterov momentum
  int muon_ns_steps = 5;            // Muon's quintic Newton–Schulz steps
  std::uint64_t seed = 1;
  std::int64_t eval_every = 100, eval_batches = 8, log_every = 10, save_every = 0;
  std::filesystem::path out;     // checkpoint.safetensors and metrics.jsonl go here (empty: nothing written)
  std::filesystem::path resume;  // a checkpoint to continue from
  bool overwrite = false;        // allow replacing an existing run in `out`
  bool progress = false;         // a one-line progress display (for a terminal) instead of log lines
  bool quiet = false;
  std::int64_t stop_at = -1;  // stop (and save) once this many steps are done, as an interruption would
};

struct train_result {
  std::int64_t step = 0;                  // steps done
  std::vector<double> train_losses;       // per step of this run
  double validation_loss = 0;             // at the end
  double tokens_per_second = 0;           // this run's training throughput
  double seconds_per_step = 0;            // this run's wall time per step (forward, backward, clipping, update)
  double optimizer_seconds_per_step = 0;  // of which the optimizer update
  bool interrupted = false;
};

/// The optimizer over the model's flat parameter buffer.
/// - `adamw`: AdamW on every tensor (bias-corrected moments; decoupled weight decay on rank >= 2 tensors).
/// - `muon`: Muon on every hidden matrix (`tensor_info::hidden_matrix`: the QKV — as three C×C matrices —,
///   attention output, FFN, BERT's head dense and the embedding projections), AdamW on the rest (token and
///   position embeddings, the output head, norm gains, biases, gates). Muon, as OSP's code (REFERENCE §4):
///   `buf = μ·buf + g`, `u = g + μ·buf` (Nesterov, μ = 0.95, no dampening), `O = NS5(u)` (qsafe::newton_schulz:
///   5 quintic steps), `θ ← θ − lr·(0.2·√max(rows, cols)·O + wd·θ)`; the 0.2·√max(m, n) scale gives O (whose
///   entries have RMS ≈ 1/√max(m, n)) the RMS update of AdamW (~0.2), so one lr and schedule serve both.
/// State: `m` holds AdamW's first moment or Muon's momentum for every parameter; `v` AdamW's second moment for
/// the AdamW tensors only (packed), so Muon keeps one float per hidden-matrix parameter instead of two.
struct optimizer {
  std::string kind = "adamw";
  std::vector<float> m, v;
  std::vector<index_t> v_offset;  // per tensor (net.tensors() order): its offset in v, or -1 for a Muon tensor
  std::int64_t t = 0;             // steps taken (AdamW's bias correction)

  void init(const model<float>& net, const std::string& kind = "adamw");
  void step(const model<float>& net, std::span<float> params, std::span<const float> grads, double lr,
            const train_options& o);
  /// Bytes of optimizer state (m and v).
  std::size_t state_bytes() const { return (m.size() + v.size()) * sizeof(float); }
};

/// Learning rate at step `s` (0-based): linear warmup to `lr` over `warmup` steps, then linear decay to 0 at `steps`.
double learning_rate(const train_options& o, std::int64_t s);

/// Trains; `stop` (e.g. set by SIGINT) makes it save a checkpoint and return after the current step.
train_result train(train_options options, const token_data& data, const std::atomic<bool>* stop = nullptr);

/// Mean validation loss of `net` over `batches` batches of the validation stream.
double evaluate(model<float>& net, const token_data& data, std::int64_t batch, std::int64_t batches,
                std::uint64_t seed);

/// Checkpoint I/O (also used by the evaluation that comes later).
void save_checkpoint(const std::filesystem::path& path, model<float>& net, const optimizer& opt, const train_options& o,
                     std::int64_t step);
/// Loads parameters (and, when `opt` is given, the optimizer state) after checking the config; returns the step.
std::int64_t load_checkpoint(const std::filesystem::path& path, model<float>& net, optimizer* opt,
                             const train_options* o);
/// The model config stored in a checkpoint's metadata.
model_config checkpoint_config(const std::filesystem::path& path);

}  // namespace pretrain
