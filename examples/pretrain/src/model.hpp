#pragma once
// The reference BERT (masked LM, post-LN, GELU) and OPT (causal LM, pre-LN, ReLU) models (REFERENCE §4), with a
// hand-written backward. All parameters live in one buffer with named views (and so do their gradients); the
// tensor math is `Ops<T>` (ops.hpp), so a CUDA backend can supply the same functions. Templated on the scalar so
// the gradient check runs in double.
//
// Layer l, with x_l (N = B·T, C) the residual stream:
//   OPT:  n1 = LN1(x_l); a = Attn(n1); r1 = x_l + a; n2 = LN2(r1); x_{l+1} = r1 + FC2(relu(FC1(n2)))
//   BERT: a = Attn(x_l); r1 = x_l + a; n1 = LN1(r1); r2 = n1 + FC2(gelu(FC1(n1))); x_{l+1} = LN2(r2)
//   Attn(u) = Proj(gate ⊙ softmax_variant(q kᵀ / √hs) v),  q | k | v = QKV(u), gate = 1 unless gated (§4)
// Head on the M rows that have a target: OPT z = LNf(x_L); BERT z = LN(gelu(Dense(x_L))); logits = z · Hᵀ (+ b)
// with H = wte (tied) or the head's own V×C matrix.
//
// Outlier-safe pretraining options (REFERENCE §4): every norm ("LN" above) is LayerNorm, RMSNorm or single-scale
// RMSNorm (`config.norm`); with `embed_proj` the token lookup is followed by e = wte[token] · R1ᵀ (before the
// positions are added) and the head by u = z · R2ᵀ, logits = u · Hᵀ (+ b). `merge_embedding_projection` folds
// R1 and R2 into wte and H after training (wte' = wte · R1ᵀ, H' = H · R2), leaving an untied model that computes
// the same logits.
//
// Hook points: every activation REFERENCE §2 lists passes through `hook` once, in forward order, as a row-major
// matrix the hook may read or modify in place (a fake-quantizer, an observer, a statistics collector).

#include <Eigen/QR>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "config.hpp"
#include "ops.hpp"

namespace pretrain {

/// The activations a hook sees (REFERENCE §2 "which tensors", plus the final norm).
enum class site {
  embedding_sum,   // token + position embeddings (N, C)
  embedding_norm,  // BERT's embedding LayerNorm output (N, C)
  qkv,             // the QKV linear output (N, 3C)
  scores,          // q kᵀ / √hs, before masking (B·NH·T, T)
  softmax,         // the softmax variant's output (B·NH·T, T)
  context,         // the attention context entering the output projection (gated if gated) (N, C)
  attention_out,   // the output projection (N, C)
  residual1,       // first residual sum (N, C)
  norm1,           // LN1 output (N, C)
  fc1,             // FFN fc1 after its activation (N, F)
  fc2,             // FFN fc2 output (N, C)
  residual2,       // second residual sum (N, C); OPT's layer output
  norm2,           // LN2 output (N, C); BERT's layer output
  final_norm,      // OPT's final LayerNorm / BERT head LayerNorm (M, C)
};
inline const char* site_name(site s) {
  static const char* names[] = {"embedding_sum", "embedding_norm", "qkv",       "scores",    "softmax",
                                "context",       "attention_out",  "residual1", "norm1",     "fc1",
                                "fc2",           "residual2",      "norm2",     "final_norm"};
  return names[static_cast<int>(s)];
}

template <class T>
using hook_function = std::function<void(site, int layer, qsafe::matrix_view<T>)>;

/// One batch: B sequences of T tokens; targets (B·T) hold the token to predict or -1; lengths (B) the number of
/// valid (non-pad) keys per sequence, or empty when all are valid.
struct batch_view {
  index_t B = 0, T = 0;
  std::span<const std::int32_t> tokens, targets, lengths;
};

template <class T, template <class> class Ops = host_ops>
class model {
 public:
  using ops = Ops<T>;

  struct tensor_info {
    std::string name;
    std::vector<index_t> shape;
    index_t offset = 0, size = 0;
    bool decay = false;          // weight decay applies to matrices only
    bool hidden_matrix = false;  // a linear layer's weight inside the network (Muon's domain; not embeddings/head)
    index_t blocks = 1;          // row blocks that are separate linear layers (the fused QKV: q, k, v)
  };
  struct layer_params {
    T *qkv_w, *qkv_b, *proj_w, *proj_b, *gate_w1, *gate_b1, *gate_w2, *gate_b2;
    T *norm1_w, *norm1_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b, *norm2_w, *norm2_b;
  };
  struct param_set {
    T *wte, *wpe, *emb_norm_w, *emb_norm_b;      // emb_norm: BERT
    T *final_norm_w, *final_norm_b;              // OPT's final LN, BERT's head LN
    T *head_dense_w, *head_dense_b, *head_bias;  // BERT
    T *emb_proj, *head_proj;                     // embed_proj: R1 after the token lookup, R2 before the head
    T* head_w;                                   // the untied output head (V, C); null when tied
    std::vector<layer_params> layers;
  };

  explicit model(const model_config& config) : config_(config) {
    validate(config_);
    param_set dummy;
    walk(nullptr, dummy, &table_);
    params_.assign(static_cast<std::size_t>(num_parameters()), T(0));
    grads_.assign(params_.size(), T(0));
    walk(params_.data(), p_, nullptr);
    walk(grads_.data(), g_, nullptr);
    variant_ = make_variant(config_.softmax);
  }
  model(const model&) = delete;
  model& operator=(const model&) = delete;

  const model_config& config() const { return config_; }
  const std::vector<tensor_info>& tensors() const { return table_; }
  index_t num_parameters() const { return table_.empty() ? 0 : table_.back().offset + table_.back().size; }
  std::span<T> parameters() { return params_; }
  std::span<const T> parameters() const { return params_; }
  std::span<T> gradients() { return grads_; }
  const param_set& weights() const { return p_; }
  /// The output head's matrix H (V, C): the token embedding when tied.
  const T* head_weight() const { return config_.tied_head ? p_.wte : p_.head_w; }
  hook_function<T> hook;  ///< called on every listed activation in the forward (may be empty)

  /// Initialization as BERT/OPT: N(0, std) matrices, zero biases, unit norm gains, gate bias logit(prior).
  void initialize(std::uint64_t seed, double std = 0.02) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, std);
    for (const tensor_info& t : table_) {
      T* p = params_.data() + t.offset;
      const bool gain = t.name.find("norm") != std::string::npos && t.name.ends_with(".weight");
      for (index_t i = 0; i < t.size; ++i) {
        p[i] = t.decay ? static_cast<T>(normal(rng)) : T(gain ? 1 : 0);
      }
      if (t.name.ends_with(".proj.weight")) {  // R1, R2: orthogonal (REFERENCE §4), Q of a Gaussian's QR
        const index_t C = t.shape[0];
        Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic> g(C, C);
        for (index_t i = 0; i < C * C; ++i) g.data()[i] = normal(rng);
        const Eigen::HouseholderQR<decltype(g)> qr(g);
        Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic> q = qr.householderQ();
        for (index_t r = 0; r < C; ++r)
          for (index_t c = 0; c < C; ++c) p[r * C + c] = static_cast<T>(q(r, c));
      }
    }
    const T prior = static_cast<T>(std::log(config_.gate_prior / (1 - config_.gate_prior)));
    if (config_.gated) {
      for (auto& l : p_.layers) {
        T* b = config_.gate_hidden == 0 ? l.gate_b1 : l.gate_b2;
        for (int h = 0; h < config_.heads; ++h) b[h] = prior;
      }
    }
  }

  void zero_grad() { std::fill(grads_.begin(), grads_.end(), T(0)); }

  /// Forward: returns the mean cross-entropy over the batch's targets (0 when there are none).
  double forward(const batch_view& batch) {
    allocate(batch.B, batch.T);
    const index_t B = B_, Tn = T_, C = config_.hidden, F = config_.ffn, N = B * Tn, V = config_.vocab;
    check_batch(batch);
    tokens_.assign(batch.tokens.begin(), batch.tokens.end());
    lengths_.assign(batch.lengths.begin(), batch.lengths.end());
    mask_ = {!config_.is_bert(), lengths_};
    const bool bert = config_.is_bert();

    // embeddings
    if (config_.embed_proj) {
      ops::token_lookup_forward(emb_tok_.data(), tokens_.data(), p_.wte, N, C);
      ops::matmul_forward(emb_.data(), emb_tok_.data(), p_.emb_proj, nullptr, N, C, C);
      ops::position_add_forward(emb_.data(), p_.wpe, B, Tn, C);
    } else {
      ops::embedding_forward(emb_.data(), tokens_.data(), p_.wte, p_.wpe, B, Tn, C);
    }
    call_hook(site::embedding_sum, -1, emb_.data(), N, C);
    if (bert) {
      norm_forward(x(0), emb_mean_.data(), emb_rstd_.data(), emb_.data(), p_.emb_norm_w, p_.emb_norm_b, N);
      call_hook(site::embedding_norm, -1, x(0), N, C);
    } else {
      std::copy(emb_.begin(), emb_.end(), x(0));
    }

    for (int l = 0; l < config_.layers; ++l) {
      const layer_params& w = p_.layers[l];
      layer_acts& a = acts_[l];
      if (!bert) {
        norm_forward(a.norm1.data(), a.norm1_mean.data(), a.norm1_rstd.data(), x(l), w.norm1_w, w.norm1_b, N);
        call_hook(site::norm1, l, a.norm1.data(), N, C);
      }
      const T* attn_in = bert ? x(l) : a.norm1.data();
      attention_forward(l, attn_in);
      ops::residual_forward(a.residual1.data(), x(l), a.attn_out.data(), N * C);
      call_hook(site::residual1, l, a.residual1.data(), N, C);
      const T* ffn_in;
      if (bert) {
        norm_forward(a.norm1.data(), a.norm1_mean.data(), a.norm1_rstd.data(), a.residual1.data(), w.norm1_w, w.norm1_b,
                     N);
        call_hook(site::norm1, l, a.norm1.data(), N, C);
        ffn_in = a.norm1.data();
      } else {
        norm_forward(a.norm2.data(), a.norm2_mean.data(), a.norm2_rstd.data(), a.residual1.data(), w.norm2_w, w.norm2_b,
                     N);
        call_hook(site::norm2, l, a.norm2.data(), N, C);
        ffn_in = a.norm2.data();
      }
      ops::matmul_forward(a.fc1_pre.data(), ffn_in, w.fc1_w, w.fc1_b, N, C, F);
      if (bert) {
        ops::gelu_forward(a.fc1_act.data(), a.fc1_pre.data(), N * F);
      } else {
        ops::relu_forward(a.fc1_act.data(), a.fc1_pre.data(), N * F);
      }
      call_hook(site::fc1, l, a.fc1_act.data(), N, F);
      ops::matmul_forward(a.fc2_out.data(), a.fc1_act.data(), w.fc2_w, w.fc2_b, N, F, C);
      call_hook(site::fc2, l, a.fc2_out.data(), N, C);
      if (bert) {
        ops::residual_forward(a.residual2.data(), a.norm1.data(), a.fc2_out.data(), N * C);
        call_hook(site::residual2, l, a.residual2.data(), N, C);
        norm_forward(x(l + 1), a.norm2_mean.data(), a.norm2_rstd.data(), a.residual2.data(), w.norm2_w, w.norm2_b, N);
        call_hook(site::norm2, l, x(l + 1), N, C);
      } else {
        ops::residual_forward(x(l + 1), a.residual1.data(), a.fc2_out.data(), N * C);
        call_hook(site::residual2, l, x(l + 1), N, C);
      }
    }

    // head on the rows that have a target
    rows_.clear();
    head_targets_.clear();
    for (index_t i = 0; i < N; ++i) {
      if (batch.targets[static_cast<std::size_t>(i)] >= 0) {
        rows_.push_back(static_cast<std::int32_t>(i));
        head_targets_.push_back(batch.targets[static_cast<std::size_t>(i)]);
      }
    }
    const index_t M = static_cast<index_t>(rows_.size());
    head_in_.resize(static_cast<std::size_t>(M * C));
    head_dense_.resize(head_in_.size());
    head_act_.resize(head_in_.size());
    head_z_.resize(head_in_.size());
    head_mean_.resize(static_cast<std::size_t>(M));
    head_rstd_.resize(static_cast<std::size_t>(M));
    logits_.resize(static_cast<std::size_t>(M * V));
    for (index_t m = 0; m < M; ++m) {
      std::copy_n(x(config_.layers) + rows_[static_cast<std::size_t>(m)] * C, C, head_in_.data() + m * C);
    }
    const T* norm_in = head_in_.data();
    if (bert) {
      ops::matmul_forward(head_dense_.data(), head_in_.data(), p_.head_dense_w, p_.head_dense_b, M, C, C);
      ops::gelu_forward(head_act_.data(), head_dense_.data(), M * C);
      norm_in = head_act_.data();
    }
    norm_forward(head_z_.data(), head_mean_.data(), head_rstd_.data(), norm_in, p_.final_norm_w, p_.final_norm_b, M);
    call_hook(site::final_norm, -1, head_z_.data(), M, C);
    const T* head_in = head_z_.data();
    if (config_.embed_proj) {
      head_u_.resize(head_z_.size());
      ops::matmul_forward(head_u_.data(), head_z_.data(), p_.head_proj, nullptr, M, C, C);
      head_in = head_u_.data();
    }
    ops::matmul_forward(logits_.data(), head_in, head_weight(), bert ? p_.head_bias : nullptr, M, C, V);
    const double total = ops::crossentropy_forward(logits_.data(), head_targets_.data(), M, V);
    return M > 0 ? total / static_cast<double>(M) : 0.0;
  }

  /// Number of predicted tokens in the last forward.
  index_t last_target_count() const { return static_cast<index_t>(rows_.size()); }

  /// Backward of the last forward's mean loss; ACCUMULATES into gradients() (call zero_grad() first).
  void backward() {
    const index_t B = B_, Tn = T_, C = config_.hidden, N = B * Tn, V = config_.vocab;
    const index_t M = static_cast<index_t>(rows_.size());
    const bool bert = config_.is_bert();
    std::fill(dres_.begin(), dres_.end(), T(0));
    if (M > 0) {
      // head: logits -> probs -> dlogits in place
      ops::crossentropy_backward(logits_.data(), head_targets_.data(), M, V, T(1) / static_cast<T>(M));
      std::vector<T> dz(static_cast<std::size_t>(M * C), T(0)), dnorm_in(dz.size(), T(0));
      T* dhead = config_.tied_head ? g_.wte : g_.head_w;
      if (config_.embed_proj) {
        std::vector<T> du(dz.size(), T(0));
        ops::matmul_backward(du.data(), dhead, bert ? g_.head_bias : nullptr, logits_.data(), head_u_.data(),
                             head_weight(), M, C, V);
        ops::matmul_backward(dz.data(), g_.head_proj, nullptr, du.data(), head_z_.data(), p_.head_proj, M, C, C);
      } else {
        ops::matmul_backward(dz.data(), dhead, bert ? g_.head_bias : nullptr, logits_.data(), head_z_.data(),
                             head_weight(), M, C, V);
      }
      const T* norm_in = bert ? head_act_.data() : head_in_.data();
      norm_backward(dnorm_in.data(), g_.final_norm_w, g_.final_norm_b, dz.data(), norm_in, p_.final_norm_w,
                    head_mean_.data(), head_rstd_.data(), M);
      std::vector<T> dhead_in(dz.size(), T(0));
      if (bert) {
        std::vector<T> ddense(dz.size(), T(0));
        ops::gelu_backward(ddense.data(), head_dense_.data(), dnorm_in.data(), M * C);
        ops::matmul_backward(dhead_in.data(), g_.head_dense_w, g_.head_dense_b, ddense.data(), head_in_.data(),
                             p_.head_dense_w, M, C, C);
      } else {
        dhead_in = std::move(dnorm_in);
      }
      for (index_t m = 0; m < M; ++m) {
        const T* src = dhead_in.data() + m * C;
        T* dst = dres_.data() + rows_[static_cast<std::size_t>(m)] * C;
        for (index_t c = 0; c < C; ++c) dst[c] += src[c];
      }
    }

    // dres_ holds d x_{l+1}; each layer turns it into d x_l
    for (int l = config_.layers - 1; l >= 0; --l) {
      if (bert) {
        bert_layer_backward(l);
      } else {
        opt_layer_backward(l);
      }
    }

    // embeddings
    const T* demb = dres_.data();
    if (bert) {
      std::fill(dtmp1_.begin(), dtmp1_.end(), T(0));
      norm_backward(dtmp1_.data(), g_.emb_norm_w, g_.emb_norm_b, dres_.data(), emb_.data(), p_.emb_norm_w,
                    emb_mean_.data(), emb_rstd_.data(), N);
      demb = dtmp1_.data();
    }
    if (config_.embed_proj) {
      ops::position_add_backward(g_.wpe, demb, B, Tn, C);
      std::fill(dtmp2_.begin(), dtmp2_.end(), T(0));
      ops::matmul_backward(dtmp2_.data(), g_.emb_proj, nullptr, demb, emb_tok_.data(), p_.emb_proj, N, C, C);
      ops::token_lookup_backward(g_.wte, dtmp2_.data(), tokens_.data(), N, C);
    } else {
      ops::embedding_backward(g_.wte, g_.wpe, demb, tokens_.data(), B, Tn, C);
    }
  }

  /// The activations of layer l from the last forward (for statistics): its output (N, C).
  std::span<const T> layer_output(int l) const {
    return {acts_x_.data() + static_cast<std::size_t>((l + 1) * B_ * T_ * config_.hidden),
            static_cast<std::size_t>(B_ * T_ * config_.hidden)};
  }
  /// The softmax variant's output and unclipped probabilities of layer l (B·NH·T, T), from the last forward.
  std::span<const T> attention_probabilities(int l) const { return acts_[static_cast<std::size_t>(l)].y; }

 private:
  struct layer_acts {
    std::vector<T> norm1, norm1_mean, norm1_rstd, qkv, scores, y, p, ctx_raw, gate, gate_hidden, ctx, attn_out;
    std::vector<T> residual1, norm2, norm2_mean, norm2_rstd, fc1_pre, fc1_act, fc2_out, residual2;
  };

  void walk(T* base, param_set& ps, std::vector<tensor_info>* table) const {
    const index_t V = config_.vocab, P = config_.max_positions, C = config_.hidden, F = config_.ffn;
    const index_t NH = config_.heads, hs = config_.head_dim(), G = config_.gate_hidden;
    index_t off = 0;
    auto add = [&](T*& ptr, const std::string& name, std::vector<index_t> shape, bool hidden = false,
                   index_t blocks = 1) {
      index_t n = 1;
      for (index_t s : shape) n *= s;
      ptr = base != nullptr ? base + off : nullptr;
      if (table != nullptr) table->push_back({name, shape, off, n, shape.size() >= 2, hidden, blocks});
      off += n;
    };
    // LayerNorm: gain and bias per channel; RMSNorm: gain per channel; single-scale RMSNorm: one gain
    auto add_norm = [&](T*& w, T*& b, const std::string& name) {
      add(w, name + ".weight", {config_.norm == "ssnorm" ? 1 : C});
      if (config_.norm == "layernorm") add(b, name + ".bias", {C});
    };
    T* unused = nullptr;
    ps = param_set{};
    add(ps.wte, "embed.tokens.weight", {V, C});
    add(ps.wpe, "embed.positions.weight", {P, C});
    if (config_.embed_proj) add(ps.emb_proj, "embed.proj.weight", {C, C}, true);
    if (config_.is_bert()) add_norm(ps.emb_norm_w, ps.emb_norm_b, "embed.norm");
    ps.layers.resize(static_cast<std::size_t>(config_.layers));
    for (int l = 0; l < config_.layers; ++l) {
      layer_params& w = ps.layers[static_cast<std::size_t>(l)];
      w = layer_params{};
      const std::string p = "layers." + std::to_string(l) + ".";
      add(w.qkv_w, p + "attn.qkv.weight", {3 * C, C}, true, 3);
      add(w.qkv_b, p + "attn.qkv.bias", {3 * C});
      add(w.proj_w, p + "attn.out.weight", {C, C}, true);
      add(w.proj_b, p + "attn.out.bias", {C});
      if (config_.gated) {
        if (G == 0) {
          add(w.gate_w1, p + "attn.gate.weight", {NH, hs});
          add(w.gate_b1, p + "attn.gate.bias", {NH});
        } else {
          add(w.gate_w1, p + "attn.gate.fc1.weight", {NH, G, hs});
          add(w.gate_b1, p + "attn.gate.fc1.bias", {NH, G});
          add(w.gate_w2, p + "attn.gate.fc2.weight", {NH, G});
          add(w.gate_b2, p + "attn.gate.fc2.bias", {NH});
        }
      }
      add_norm(w.norm1_w, w.norm1_b, p + "norm1");
      add(w.fc1_w, p + "mlp.fc1.weight", {F, C}, true);
      add(w.fc1_b, p + "mlp.fc1.bias", {F});
      add(w.fc2_w, p + "mlp.fc2.weight", {C, F}, true);
      add(w.fc2_b, p + "mlp.fc2.bias", {C});
      add_norm(w.norm2_w, w.norm2_b, p + "norm2");
    }
    if (config_.is_bert()) {
      add(ps.head_dense_w, "head.dense.weight", {C, C}, true);
      add(ps.head_dense_b, "head.dense.bias", {C});
      add_norm(ps.final_norm_w, ps.final_norm_b, "head.norm");
      add(ps.head_bias, "head.bias", {V});
    } else {
      add_norm(ps.final_norm_w, ps.final_norm_b, "final_norm");
    }
    if (config_.embed_proj) add(ps.head_proj, "head.proj.weight", {C, C}, true);
    if (!config_.tied_head) add(ps.head_w, "head.weight", {V, C});
    (void)unused;
  }

  void check_batch(const batch_view& b) const {
    const auto n = static_cast<std::size_t>(b.B * b.T);
    if (b.T > config_.max_positions) throw user_error("sequence length exceeds the model's max_positions");
    if (b.tokens.size() != n || b.targets.size() != n) throw std::invalid_argument("batch: tokens/targets size");
    if (!b.lengths.empty() && b.lengths.size() != static_cast<std::size_t>(b.B)) {
      throw std::invalid_argument("batch: lengths size");
    }
    for (std::int32_t t : b.tokens) {
      if (t < 0 || t >= config_.vocab) throw user_error("token id " + std::to_string(t) + " outside the vocabulary");
    }
    for (std::int32_t t : b.targets) {
      if (t >= config_.vocab) throw user_error("target id " + std::to_string(t) + " outside the vocabulary");
    }
  }

  void allocate(index_t B, index_t Tn) {
    if (B == B_ && Tn == T_) return;
    B_ = B;
    T_ = Tn;
    const auto C = static_cast<std::size_t>(config_.hidden), N = static_cast<std::size_t>(B * Tn);
    const auto NH = static_cast<std::size_t>(config_.heads), F = static_cast<std::size_t>(config_.ffn);
    const auto G = static_cast<std::size_t>(config_.gate_hidden), TT = static_cast<std::size_t>(Tn * Tn);
    emb_.assign(N * C, T(0));
    emb_tok_.assign(config_.embed_proj ? N * C : 0, T(0));
    emb_mean_.assign(N, T(0));
    emb_rstd_.assign(N, T(0));
    acts_x_.assign((static_cast<std::size_t>(config_.layers) + 1) * N * C, T(0));
    acts_.resize(static_cast<std::size_t>(config_.layers));
    for (layer_acts& a : acts_) {
      for (auto* v : {&a.norm1, &a.ctx_raw, &a.ctx, &a.attn_out, &a.residual1, &a.norm2, &a.fc2_out, &a.residual2}) {
        v->assign(N * C, T(0));
      }
      for (auto* v : {&a.norm1_mean, &a.norm1_rstd, &a.norm2_mean, &a.norm2_rstd}) v->assign(N, T(0));
      a.qkv.assign(N * 3 * C, T(0));
      a.y.assign(static_cast<std::size_t>(B) * NH * TT, T(0));
      a.p.assign(a.y.size(), T(0));
      a.gate.assign(config_.gated ? N * NH : 0, T(0));
      a.gate_hidden.assign(config_.gated ? N * NH * G : 0, T(0));
      a.fc1_pre.assign(N * F, T(0));
      a.fc1_act.assign(N * F, T(0));
    }
    scores_.assign(static_cast<std::size_t>(B) * NH * TT, T(0));
    datt_.assign(scores_.size(), T(0));
    for (auto* v : {&dres_, &dtmp1_, &dtmp2_, &dctx_, &dctx_raw_}) v->assign(N * C, T(0));
    dqkv_.assign(N * 3 * C, T(0));
    dfc1_act_.assign(N * F, T(0));
    dfc1_pre_.assign(N * F, T(0));
  }

  // The configured norm (LayerNorm saves mean and rstd; the RMSNorms rstd only; b is null for them).
  void norm_forward(T* out, T* mean, T* rstd, const T* inp, const T* w, const T* b, index_t N) {
    if (config_.norm == "layernorm") {
      ops::layernorm_forward(out, mean, rstd, inp, w, b, N, config_.hidden, config_.norm_eps);
    } else {
      ops::rmsnorm_forward(out, rstd, inp, w, N, config_.hidden, config_.norm_eps, config_.norm == "ssnorm");
    }
  }
  void norm_backward(T* dinp, T* dw, T* db, const T* dout, const T* inp, const T* w, const T* mean, const T* rstd,
                     index_t N) {
    if (config_.norm == "layernorm") {
      ops::layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, N, config_.hidden);
    } else {
      ops::rmsnorm_backward(dinp, dw, dout, inp, w, rstd, N, config_.hidden, config_.norm == "ssnorm");
    }
  }

  T* x(int l) {
    return acts_x_.data() + static_cast<std::size_t>(l) * static_cast<std::size_t>(B_ * T_ * config_.hidden);
  }

  void call_hook(site s, int layer, T* data, index_t rows, index_t cols) {
    if (hook) hook(s, layer, qsafe::matrix_view<T>(data, rows, cols));
  }

  // attention block: in (N, C) -> acts_[l].attn_out (N, C)
  void attention_forward(int l, const T* in) {
    const index_t B = B_, Tn = T_, C = config_.hidden, NH = config_.heads, N = B * Tn, G = config_.gate_hidden;
    const layer_params& w = p_.layers[static_cast<std::size_t>(l)];
    layer_acts& a = acts_[static_cast<std::size_t>(l)];
    ops::matmul_forward(a.qkv.data(), in, w.qkv_w, w.qkv_b, N, C, 3 * C);
    call_hook(site::qkv, l, a.qkv.data(), N, 3 * C);
    ops::attention_scores_forward(scores_.data(), a.qkv.data(), B, Tn, C, NH);
    call_hook(site::scores, l, scores_.data(), B * NH * Tn, Tn);
    ops::softmax_forward(a.y.data(), a.p.data(), scores_.data(), variant_, mask_, B, Tn, NH);
    call_hook(site::softmax, l, a.y.data(), B * NH * Tn, Tn);
    ops::attention_context_forward(a.ctx_raw.data(), a.y.data(), a.qkv.data(), B, Tn, C, NH);
    if (config_.gated) {
      ops::gate_forward(a.ctx.data(), a.gate.data(), a.gate_hidden.data(), a.ctx_raw.data(), in, w.gate_w1, w.gate_b1,
                        w.gate_w2, w.gate_b2, N, C, NH, G);
    } else {
      std::copy(a.ctx_raw.begin(), a.ctx_raw.end(), a.ctx.begin());
    }
    call_hook(site::context, l, a.ctx.data(), N, C);
    ops::matmul_forward(a.attn_out.data(), a.ctx.data(), w.proj_w, w.proj_b, N, C, C);
    call_hook(site::attention_out, l, a.attn_out.data(), N, C);
  }

  // d attn_out (N, C) -> din (N, C) +=
  void attention_backward(int l, const T* in, const T* dout, T* din) {
    const index_t B = B_, Tn = T_, C = config_.hidden, NH = config_.heads, N = B * Tn, G = config_.gate_hidden;
    const layer_params& w = p_.layers[static_cast<std::size_t>(l)];
    const layer_params& gw = g_.layers[static_cast<std::size_t>(l)];
    layer_acts& a = acts_[static_cast<std::size_t>(l)];
    std::fill(dctx_.begin(), dctx_.end(), T(0));
    ops::matmul_backward(dctx_.data(), gw.proj_w, gw.proj_b, dout, a.ctx.data(), w.proj_w, N, C, C);
    const T* dctx_raw = dctx_.data();
    if (config_.gated) {
      std::fill(dctx_raw_.begin(), dctx_raw_.end(), T(0));
      ops::gate_backward(dctx_raw_.data(), din, gw.gate_w1, gw.gate_b1, gw.gate_w2, gw.gate_b2, dctx_.data(),
                         a.gate.data(), a.gate_hidden.data(), a.ctx_raw.data(), in, w.gate_w1, w.gate_w2, N, C, NH, G);
      dctx_raw = dctx_raw_.data();
    }
    std::fill(dqkv_.begin(), dqkv_.end(), T(0));
    ops::attention_context_backward(datt_.data(), dqkv_.data(), dctx_raw, a.y.data(), a.qkv.data(), B, Tn, C, NH);
    ops::softmax_backward(datt_.data(), a.p.data(), datt_.data(), variant_, mask_, B, Tn, NH);  // in place
    ops::attention_scores_backward(dqkv_.data(), datt_.data(), a.qkv.data(), B, Tn, C, NH);
    ops::matmul_backward(din, gw.qkv_w, gw.qkv_b, dqkv_.data(), in, w.qkv_w, N, C, 3 * C);
  }

  // dres_: d x_{l+1} -> d x_l
  void opt_layer_backward(int l) {
    const index_t N = B_ * T_, C = config_.hidden, F = config_.ffn;
    const layer_params& w = p_.layers[static_cast<std::size_t>(l)];
    const layer_params& gw = g_.layers[static_cast<std::size_t>(l)];
    layer_acts& a = acts_[static_cast<std::size_t>(l)];
    // x_{l+1} = r1 + fc2(relu(fc1(n2)))
    std::fill(dfc1_act_.begin(), dfc1_act_.end(), T(0));
    ops::matmul_backward(dfc1_act_.data(), gw.fc2_w, gw.fc2_b, dres_.data(), a.fc1_act.data(), w.fc2_w, N, F, C);
    std::fill(dfc1_pre_.begin(), dfc1_pre_.end(), T(0));
    ops::relu_backward(dfc1_pre_.data(), a.fc1_pre.data(), dfc1_act_.data(), N * F);
    std::fill(dtmp1_.begin(), dtmp1_.end(), T(0));  // d n2
    ops::matmul_backward(dtmp1_.data(), gw.fc1_w, gw.fc1_b, dfc1_pre_.data(), a.norm2.data(), w.fc1_w, N, C, F);
    // dres_ is now d r1 (the residual path) += through LN2
    norm_backward(dres_.data(), gw.norm2_w, gw.norm2_b, dtmp1_.data(), a.residual1.data(), w.norm2_w,
                  a.norm2_mean.data(), a.norm2_rstd.data(), N);
    // r1 = x_l + attn(n1): d x_l = d r1 + LN1ᵀ(attnᵀ(d r1))
    std::fill(dtmp2_.begin(), dtmp2_.end(), T(0));  // d n1
    attention_backward(l, a.norm1.data(), dres_.data(), dtmp2_.data());
    norm_backward(dres_.data(), gw.norm1_w, gw.norm1_b, dtmp2_.data(), x(l), w.norm1_w, a.norm1_mean.data(),
                  a.norm1_rstd.data(), N);
  }

  void bert_layer_backward(int l) {
    const index_t N = B_ * T_, C = config_.hidden, F = config_.ffn;
    const layer_params& w = p_.layers[static_cast<std::size_t>(l)];
    const layer_params& gw = g_.layers[static_cast<std::size_t>(l)];
    layer_acts& a = acts_[static_cast<std::size_t>(l)];
    // x_{l+1} = LN2(r2)
    std::fill(dtmp1_.begin(), dtmp1_.end(), T(0));  // d r2
    norm_backward(dtmp1_.data(), gw.norm2_w, gw.norm2_b, dres_.data(), a.residual2.data(), w.norm2_w,
                  a.norm2_mean.data(), a.norm2_rstd.data(), N);
    // r2 = n1 + fc2(gelu(fc1(n1)))
    std::copy(dtmp1_.begin(), dtmp1_.end(), dtmp2_.begin());  // d n1 (residual path)
    std::fill(dfc1_act_.begin(), dfc1_act_.end(), T(0));
    ops::matmul_backward(dfc1_act_.data(), gw.fc2_w, gw.fc2_b, dtmp1_.data(), a.fc1_act.data(), w.fc2_w, N, F, C);
    std::fill(dfc1_pre_.begin(), dfc1_pre_.end(), T(0));
    ops::gelu_backward(dfc1_pre_.data(), a.fc1_pre.data(), dfc1_act_.data(), N * F);
    ops::matmul_backward(dtmp2_.data(), gw.fc1_w, gw.fc1_b, dfc1_pre_.data(), a.norm1.data(), w.fc1_w, N, C, F);
    // n1 = LN1(r1)
    std::fill(dres_.begin(), dres_.end(), T(0));  // d r1
    norm_backward(dres_.data(), gw.norm1_w, gw.norm1_b, dtmp2_.data(), a.residual1.data(), w.norm1_w,
                  a.norm1_mean.data(), a.norm1_rstd.data(), N);
    // r1 = x_l + attn(x_l): d x_l = d r1 + attnᵀ(d r1)
    std::copy(dres_.begin(), dres_.end(), dtmp1_.begin());
    attention_backward(l, x(l), dtmp1_.data(), dres_.data());
  }

  model_config config_;
  any_variant variant_;
  std::vector<tensor_info> table_;
  std::vector<T> params_, grads_;
  param_set p_, g_;

  index_t B_ = 0, T_ = 0;
  std::vector<std::int32_t> tokens_, lengths_, rows_, head_targets_;
  attention_mask mask_;
  std::vector<T> emb_, emb_mean_, emb_rstd_, acts_x_, scores_;
  std::vector<layer_acts> acts_;
  std::vector<T> emb_tok_;  // embed_proj: the token rows before R1
  std::vector<T> head_in_, head_dense_, head_act_, head_z_, head_u_, head_mean_, head_rstd_, logits_;
  std::vector<T> dres_, dtmp1_, dtmp2_, dctx_, dctx_raw_, dqkv_, dfc1_act_, dfc1_pre_, datt_;
};

/// The config of a model after `merge_embedding_projection`: no projections, an untied head.
inline model_config merged_config(model_config c) {
  c.embed_proj = false;
  c.tied_head = false;
  return c;
}

/// Folds the embedding projections of `src` (config.embed_proj) into its neighbours (REFERENCE §4): `dst` (built
/// with `merged_config(src.config())`) gets wte' = wte · R1ᵀ, head' = H · R2 (H = wte when `src` is tied) and every
/// other tensor as is, so it computes the same logits up to rounding, with two C×C products fewer per token.
template <class T, template <class> class Ops>
void merge_embedding_projection(const model<T, Ops>& src, model<T, Ops>& dst) {
  if (!src.config().embed_proj) throw user_error("merge: the model has no embedding projection");
  if (to_json(dst.config()) != to_json(merged_config(src.config()))) {
    throw std::invalid_argument("merge_embedding_projection: dst must be built with merged_config(src.config())");
  }
  const index_t V = src.config().vocab, C = src.config().hidden;
  const auto& w = src.weights();
  for (const auto& t : dst.tensors()) {
    T* out = dst.parameters().data() + t.offset;
    if (t.name == "embed.tokens.weight") {
      as_matrix(out, V, C).noalias() = as_matrix(w.wte, V, C) * as_matrix(w.emb_proj, C, C).transpose();
    } else if (t.name == "head.weight") {
      as_matrix(out, V, C).noalias() = as_matrix(src.head_weight(), V, C) * as_matrix(w.head_proj, C, C);
    } else {
      const auto& from =
          *std::find_if(src.tensors().begin(), src.tensors().end(), [&](const auto& s) { return s.name == t.name; });
      std::copy_n(src.parameters().data() + from.offset, t.size, out);
    }
  }
}

}  // namespace pretrain
