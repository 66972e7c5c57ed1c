#include "evaluate.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>

#include "fmt/core.h"
#include "qsafe/estimators.hpp"
#include "qsafe/quant.hpp"
#include "qsafe/stats.hpp"
#include "trainer.hpp"

namespace pretrain {

namespace {

// The hooks call qsafe with `qsafe::simd` (one thread): their tensors are small (one sequence's T·d values, one
// activation of a batch) and an OpenMP region per call cost more than it saved (3x slower on the busy 2-core box).
using view_t = qsafe::matrix_view<float>;
using const_view_t = qsafe::matrix_view<const float>;

batch_view view_of(const batch& b) {
  return {b.B, b.T, b.tokens, b.targets, b.lengths};
}

// Installs a hook on the model for the lifetime of the object; the previous hook comes back on destruction.
class hook_guard {
 public:
  hook_guard(model<float>& net, hook_function<float> h) : net_(net), saved_(std::move(net.hook)) {
    net_.hook = std::move(h);
  }
  ~hook_guard() { net_.hook = std::move(saved_); }
  hook_guard(const hook_guard&) = delete;
  hook_guard& operator=(const hook_guard&) = delete;

 private:
  model<float>& net_;
  hook_function<float> saved_;
};

// BERT masked-token accuracy: the head's logits z·wteᵀ + b recomputed from the final-norm activation (M, C), whose
// rows are the batch's targeted positions in order; the argmax compared with the target.
struct accuracy_counter {
  std::int64_t correct = 0, total = 0;
  void count(const model<float>& net, const batch& b, const_view_t z) {
    const auto& w = net.weights();
    const index_t V = net.config().vocab, C = net.config().hidden;
    std::vector<std::int32_t> targets;
    for (std::int32_t t : b.targets)
      if (t >= 0) targets.push_back(t);
    if (static_cast<index_t>(targets.size()) != z.rows) throw std::logic_error("accuracy: rows != targets");
    if (net.config().embed_proj) throw std::logic_error("accuracy: merge the embedding projections first");
    row_matrix<float> logits =
        as_matrix(z.data, z.rows, C, z.row_stride) * as_matrix(net.head_weight(), V, C).transpose();
    for (index_t m = 0; m < z.rows; ++m) {
      index_t best = 0;
      for (index_t v = 1; v < V; ++v) {
        const float bias_v = w.head_bias != nullptr ? w.head_bias[v] : 0.0f;
        const float bias_best = w.head_bias != nullptr ? w.head_bias[best] : 0.0f;
        if (logits(m, v) + bias_v > logits(m, best) + bias_best) best = v;
      }
      correct += best == targets[static_cast<std::size_t>(m)] ? 1 : 0;
      ++total;
    }
  }
};

// Runs `sequences` sequences of `split` at length T in batches; `current` points at the batch being run so that
// hooks can read its tokens and targets.
lm_result run_stream(model<float>& net, const std::vector<std::uint16_t>& split, const token_data& data, index_t T,
                     std::int64_t sequences, std::int64_t batch_size, std::uint64_t seed, const batch*& current,
                     accuracy_counter* accuracy) {
  const model_config& c = net.config();
  sampler s(split, c.arch, T, data.specials, c.vocab, seed, false);
  sequences = std::max<std::int64_t>(1, std::min(sequences, s.samples()));
  lm_result r;
  double total = 0;
  for (std::int64_t first = 0; first < sequences; first += batch_size) {
    const batch b = s.get_range(first, std::min(batch_size, sequences - first));
    current = &b;
    const double loss = net.forward(view_of(b));
    current = nullptr;
    total += loss * static_cast<double>(net.last_target_count());
    r.targets += net.last_target_count();
  }
  r.sequences = sequences;
  r.loss = r.targets > 0 ? total / static_cast<double>(r.targets) : 0.0;
  r.perplexity = std::exp(r.loss);
  if (accuracy != nullptr && accuracy->total > 0) {
    r.accuracy = static_cast<double>(accuracy->correct) / static_cast<double>(accuracy->total);
  }
  return r;
}

// The statistics modules (REFERENCE §3): which site is which module for the architecture.
const char* stats_module(site s, bool bert) {
  switch (s) {
    case site::fc2:
      return "ffn";
    case site::attention_out:
      return "attention";
    case site::residual2:
      return bert ? nullptr : "output";
    case site::norm2:
      return bert ? "output" : "norm2";
    case site::norm1:
      return "norm1";
    default:
      return nullptr;
  }
}

struct stats_accumulator {
  double inf_norm = 0, kurtosis = 0, osp_excess_kurtosis = 0;
  std::int64_t sequences = 0, tokens = 0;
  std::vector<double> dim_max_abs;
};

// ---- quantizers -----------------------------------------------------------------------------------------------

// One activation's quantizer: its estimator behind two closures (a std::variant of the estimators trips GCC 12's
// -Wfree-nonheap-object false positive), and the static parameters once calibrated.
struct activation_quantizer {
  std::function<void(const_view_t)> observe;
  std::function<qsafe::quant_params(int)> qparams;
  qsafe::quant_params params;
  bool used = false;
};

template <class Estimator>
activation_quantizer wrap(std::shared_ptr<Estimator> e) {
  activation_quantizer q;
  q.observe = [e](const_view_t x) { e->observe(qsafe::simd, x); };
  q.qparams = [e](int bits) { return e->qparams(bits, qsafe::quant_mode::asymmetric); };
  return q;
}

activation_quantizer make_activation_quantizer(const eval_options& o) {
  if (o.activation_estimator == "running-min-max") {
    return wrap(std::make_shared<qsafe::running_min_max_estimator<float>>(o.momentum));
  }
  if (o.activation_estimator == "percentile") {
    return wrap(std::make_shared<qsafe::percentile_estimator<float>>(o.percentile, o.momentum));
  }
  if (o.activation_estimator == "min-max") return wrap(std::make_shared<qsafe::min_max_estimator<float>>());
  throw user_error("unknown activation estimator '" + o.activation_estimator +
                   "' (running-min-max, percentile, min-max)");
}

// Whether the strict setting quantizes the activation at this site (REFERENCE §2): all of them but BERT's head
// LayerNorm, which belongs to the (unquantized) output layer.
bool quantized_site(site s, bool bert) {
  return !(s == site::final_norm && bert);
}

std::string site_tensor(site s, int layer) {
  static const std::map<site, std::string> names = {{site::embedding_sum, "embed.sum"},
                                                    {site::embedding_norm, "embed.norm"},
                                                    {site::scores, "attn.scores"},
                                                    {site::softmax, "attn.softmax"},
                                                    {site::context, "attn.context"},
                                                    {site::attention_out, "attn.out"},
                                                    {site::residual1, "residual1"},
                                                    {site::norm1, "norm1"},
                                                    {site::fc1, "mlp.fc1"},
                                                    {site::fc2, "mlp.fc2"},
                                                    {site::residual2, "residual2"},
                                                    {site::norm2, "norm2"},
                                                    {site::final_norm, "final_norm"}};
  const std::string& n = names.at(s);
  return layer < 0 ? n : "layers." + std::to_string(layer) + "." + n;
}

// Calls f(name, view) for each per-tensor quantizer of an activation: the fused QKV output is the three
// tensors q, k, v (three Linear layers in the papers' models), each its own column block.
template <class F>
void for_each_part(site s, int layer, view_t x, F&& f) {
  if (s == site::qkv) {
    const index_t C = x.cols / 3;
    const char* parts[] = {"attn.q", "attn.k", "attn.v"};
    for (int k = 0; k < 3; ++k) {
      f("layers." + std::to_string(layer) + "." + parts[k], view_t(x.data + k * C, x.rows, C, x.row_stride));
    }
    return;
  }
  f(site_tensor(s, layer), x);
}

// Rewrites the embedding sum (N, C) as Q(wte)[token] + wpe[position], with the model's wpe (already
// fake-quantized in place) and a fake-quantized copy of the token table: the table is tied to the output head,
// which stays in FP, so it cannot be quantized in place.
void quantized_embedding(const model<float>& net, const std::vector<float>& qwte, const batch& b, view_t x) {
  const index_t C = net.config().hidden;
  const float* wpe = net.weights().wpe;
  for (index_t i = 0; i < x.rows; ++i) {
    const float* e = qwte.data() + static_cast<index_t>(b.tokens[static_cast<std::size_t>(i)]) * C;
    const float* p = wpe + (i % b.T) * C;
    float* o = x.row(i);
    for (index_t c = 0; c < C; ++c) o[c] = e[c] + p[c];
  }
}

// Fake-quantizes the listed weights in place (symmetric, per tensor) and returns the quantized token table;
// names of the weight quantizers are appended to `fired`.
std::vector<float> quantize_weights(model<float>& net, const eval_options& o, std::vector<std::string>& fired) {
  auto params = net.parameters();
  // Per tensor, or per output channel (each row of a [out, in] matrix; vectors such as norm gains stay per tensor).
  auto quantize = [&](const std::string& name, view_t w) {
    const bool per_channel = o.weight_per_channel && w.rows > 1;
    const qsafe::channel_layout layout =
        per_channel ? qsafe::channel_layout{qsafe::channel_axis::row, w.rows} : qsafe::channel_layout{};
    std::vector<qsafe::quant_params> p;
    if (o.weight_estimator == "min-max") {
      qsafe::min_max_estimator<float> est(layout);
      est.observe(qsafe::simd, const_view_t(w));
      p = est.channel_qparams(o.weight_bits, qsafe::quant_mode::symmetric);
    } else if (o.weight_estimator == "mse") {
      qsafe::mse_estimator<float> est(o.weight_bits, qsafe::quant_mode::symmetric, layout);
      qsafe::calibrate(qsafe::simd, est, const_view_t(w));
      p = est.channel_qparams(o.weight_bits, qsafe::quant_mode::symmetric);
    } else {
      throw user_error("unknown weight estimator '" + o.weight_estimator + "' (min-max, mse)");
    }
    if (per_channel) {
      qsafe::fake_quantize(qsafe::simd, const_view_t(w), std::span<const qsafe::quant_params>(p),
                           qsafe::channel_axis::row, w);
    } else {
      qsafe::fake_quantize(qsafe::simd, const_view_t(w), p.front(), w);
    }
    fired.push_back(name);
  };
  std::vector<float> qwte;
  for (const auto& t : net.tensors()) {
    const bool weight = t.name.ends_with(".weight");
    const bool excluded = t.name.starts_with("head.") || t.name.find(".gate.") != std::string::npos;
    if (!weight || excluded) continue;
    float* data = params.data() + t.offset;
    const index_t rows = t.shape.size() >= 2 ? t.shape[0] : 1, cols = t.size / rows;
    if (t.name == "embed.tokens.weight") {
      qwte.assign(data, data + t.size);
      quantize(t.name, view_t(qwte.data(), rows, cols));
    } else if (t.name.ends_with("attn.qkv.weight")) {
      const std::string prefix = t.name.substr(0, t.name.size() - std::string("qkv.weight").size());
      const index_t C = rows / 3;
      const char* parts[] = {"q", "k", "v"};
      for (int k = 0; k < 3; ++k) quantize(prefix + parts[k] + ".weight", view_t(data + k * C * cols, C, cols));
    } else {
      quantize(t.name, view_t(data, rows, cols));
    }
  }
  return qwte;
}

}  // namespace

std::string quant_format::name() const {
  return fmt::format("W{}A{}{}", weight_bits, activation_bits, weight_per_channel ? " per-channel" : "");
}

quant_format parse_format(const std::string& text, bool per_channel_default) {
  quant_format f;
  f.weight_per_channel = per_channel_default;
  std::string body = text;
  for (const auto& [suffix, channel] : {std::pair{"-channel", true}, std::pair{"-tensor", false}}) {
    if (body.ends_with(suffix)) {
      body.resize(body.size() - std::string(suffix).size());
      f.weight_per_channel = channel;
    }
  }
  int consumed = 0;
  if (std::sscanf(body.c_str(), "%*1[wW]%d%*1[aA]%d%n", &f.weight_bits, &f.activation_bits, &consumed) != 2 ||
      consumed != static_cast<int>(body.size())) {
    throw user_error("bad format '" + text + "' (e.g. w8a8, w4a8, w4a4-channel)");
  }
  if (f.weight_bits < 2 || f.weight_bits > 16 || f.activation_bits < 2 || f.activation_bits > 16) {
    throw user_error("format '" + text + "': bit widths must be in [2, 16]");
  }
  return f;
}

eval_options resolved(eval_options o, const model_config& c) {
  const bool bert = c.is_bert();
  if (o.weight_estimator.empty()) o.weight_estimator = bert ? "min-max" : "mse";
  if (o.activation_estimator.empty()) o.activation_estimator = bert ? "running-min-max" : "percentile";
  if (o.calibration_batches <= 0) o.calibration_batches = bert ? 16 : 4;
  if (o.calibration_batch <= 0) o.calibration_batch = bert ? 32 : 8;
  if (o.calibration_split.empty()) o.calibration_split = bert ? "validation" : "train";
  if (o.calibration_split != "train" && o.calibration_split != "validation") {
    throw user_error("calibration split must be train or validation, got '" + o.calibration_split + "'");
  }
  if (o.weight_bits < 2 || o.weight_bits > 16 || o.activation_bits < 2 || o.activation_bits > 16) {
    throw user_error("bit widths must be in [2, 16]");
  }
  if (o.batch <= 0 || o.sequences <= 0) throw user_error("batch and sequences must be positive");
  return o;
}

std::vector<std::string> quantized_tensors(const model_config& c) {
  const bool bert = c.is_bert();
  std::vector<std::string> names = {"embed.tokens.weight", "embed.positions.weight", "embed.sum"};
  if (bert) names.insert(names.end(), {"embed.norm.weight", "embed.norm"});
  for (int l = 0; l < c.layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    for (const char* n :
         {"norm1.weight",   "norm2.weight",   "attn.q.weight", "attn.k.weight", "attn.v.weight", "attn.out.weight",
          "mlp.fc1.weight", "mlp.fc2.weight", "norm1",         "attn.q",        "attn.k",        "attn.v",
          "attn.scores",    "attn.softmax",   "attn.context",  "attn.out",      "residual1",     "mlp.fc1",
          "mlp.fc2",        "residual2",      "norm2"}) {
      names.push_back(p + n);
    }
  }
  if (!bert) names.insert(names.end(), {"final_norm.weight", "final_norm"});
  return names;
}

lm_result evaluate_fp(model<float>& net, const token_data& data, const eval_options& options, stats_result* stats,
                      const pre_hook& pre) {
  const eval_options o = resolved(options, net.config());
  const model_config& c = net.config();
  const bool bert = c.is_bert();
  const index_t T = c.seq_len;
  const batch* current = nullptr;
  accuracy_counter accuracy;
  std::map<std::pair<std::string, int>, stats_accumulator> acc;
  hook_guard guard(net, [&](site s, int layer, view_t x) {
    if (pre) pre(s, layer, x);
    if (bert && s == site::final_norm) accuracy.count(net, *current, x);
    const char* module = stats != nullptr ? stats_module(s, bert) : nullptr;
    if (module == nullptr) return;
    stats_accumulator& a = acc[{module, layer}];
    a.dim_max_abs.resize(static_cast<std::size_t>(x.cols), 0.0);
    for (index_t b = 0; b < x.rows / T; ++b) {  // one value per sequence over its T·d values
      const qsafe::moments m = qsafe::tensor_moments(qsafe::simd, const_view_t(x.row(b * T), T, x.cols));
      a.inf_norm += m.inf_norm();
      a.kurtosis += m.kurtosis();
      ++a.sequences;
    }
    a.osp_excess_kurtosis += qsafe::osp_excess_kurtosis(qsafe::simd, const_view_t(x)) * static_cast<double>(x.rows);
    a.tokens += x.rows;
    for (index_t r = 0; r < x.rows; ++r)
      for (index_t d = 0; d < x.cols; ++d) {
        double& mx = a.dim_max_abs[static_cast<std::size_t>(d)];
        mx = std::max(mx, static_cast<double>(std::fabs(x(r, d))));
      }
  });
  lm_result r = run_stream(net, data.validation, data, T, o.sequences, o.batch, o.seed, current, &accuracy);
  if (stats != nullptr) {
    *stats = {};
    double kurtosis_sum = 0, osp_sum = 0;
    int outputs = 0;
    for (auto& [key, a] : acc) {
      module_stats m;
      m.module = key.first;
      m.layer = key.second;
      m.inf_norm = a.inf_norm / static_cast<double>(a.sequences);
      m.kurtosis = a.kurtosis / static_cast<double>(a.sequences);
      m.osp_excess_kurtosis = a.osp_excess_kurtosis / static_cast<double>(a.tokens);
      if (m.module == "output") {
        osp_sum += m.osp_excess_kurtosis;
        ++outputs;
      }
      m.dim_max_abs = a.dim_max_abs;
      std::vector<double> sorted = a.dim_max_abs;
      std::nth_element(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(sorted.size() / 2), sorted.end());
      const double median = sorted[sorted.size() / 2];
      for (std::size_t d = 0; d < a.dim_max_abs.size(); ++d) {
        if (a.dim_max_abs[d] > o.outlier_factor * median) m.outlier_dims.push_back(static_cast<int>(d));
      }
      std::sort(m.outlier_dims.begin(), m.outlier_dims.end(), [&](int x, int y) {
        return a.dim_max_abs[static_cast<std::size_t>(x)] > a.dim_max_abs[static_cast<std::size_t>(y)];
      });
      stats->max_inf_norm = std::max(stats->max_inf_norm, m.inf_norm);
      kurtosis_sum += m.kurtosis;
      stats->modules.push_back(std::move(m));
    }
    std::sort(stats->modules.begin(), stats->modules.end(), [](const module_stats& a, const module_stats& b) {
      return std::tie(a.layer, a.module) < std::tie(b.layer, b.module);
    });
    stats->avg_kurtosis = stats->modules.empty() ? 0.0 : kurtosis_sum / static_cast<double>(stats->modules.size());
    stats->osp_excess_kurtosis = outputs > 0 ? osp_sum / outputs : 0.0;
  }
  return r;
}

quant_result evaluate_quantized(model<float>& net, const token_data& data, const eval_options& options,
                                const pre_hook& pre) {
  const eval_options o = resolved(options, net.config());
  const model_config& c = net.config();
  const bool bert = c.is_bert();
  const index_t T = c.seq_len;
  if (c.embed_proj) {
    throw user_error("the quantized evaluation needs the embedding projections merged (merge_embedding_projection)");
  }

  // weights, restored on every exit
  struct restore {
    model<float>& net;
    std::vector<float> saved;
    ~restore() { std::copy(saved.begin(), saved.end(), net.parameters().begin()); }
  } restorer{net, std::vector<float>(net.parameters().begin(), net.parameters().end())};
  quant_result result;
  const std::vector<float> qwte = quantize_weights(net, o, result.fired);

  std::map<std::string, activation_quantizer> quantizers;
  const batch* current = nullptr;
  bool calibrating = true;
  accuracy_counter accuracy;
  hook_guard guard(net, [&](site s, int layer, view_t x) {
    if (pre) pre(s, layer, x);
    if (s == site::embedding_sum) quantized_embedding(net, qwte, *current, x);
    if (quantized_site(s, bert)) {
      for_each_part(s, layer, x, [&](const std::string& name, view_t part) {
        if (calibrating) {
          auto it = quantizers.find(name);
          if (it == quantizers.end()) it = quantizers.emplace(name, make_activation_quantizer(o)).first;
          it->second.observe(const_view_t(part));
          return;
        }
        auto it = quantizers.find(name);
        if (it == quantizers.end()) throw std::logic_error("activation '" + name + "' was not calibrated");
        qsafe::fake_quantize(qsafe::simd, const_view_t(part), it->second.params, part);
        if (!it->second.used) result.fired.push_back(name);
        it->second.used = true;
      });
    }
    if (!calibrating && bert && s == site::final_norm) accuracy.count(net, *current, x);
  });

  // calibration: static activation ranges from FP activations of the weight-quantized model
  const auto& split = o.calibration_split == "train" ? data.train : data.validation;
  run_stream(net, split, data, T, o.calibration_batches * o.calibration_batch, o.calibration_batch, o.seed + 1, current,
             nullptr);
  for (auto& [name, q] : quantizers) {
    q.params = q.qparams(o.activation_bits);
  }
  calibrating = false;
  result.lm = run_stream(net, data.validation, data, T, o.sequences, o.batch, o.seed, current, &accuracy);
  return result;
}

std::vector<std::pair<int, lm_result>> length_study(model<float>& net, const token_data& data,
                                                    const eval_options& options) {
  const eval_options o = resolved(options, net.config());
  const model_config& c = net.config();
  std::vector<std::pair<int, lm_result>> out;
  std::vector<int> done;
  for (int requested : o.lengths) {
    const int L = std::min(requested, c.max_positions);
    if (L < (c.is_bert() ? 3 : 1) || std::find(done.begin(), done.end(), L) != done.end()) continue;
    done.push_back(L);
    const batch* current = nullptr;
    accuracy_counter accuracy;
    hook_guard guard(net, [&](site s, int, view_t x) {
      if (c.is_bert() && s == site::final_norm) accuracy.count(net, *current, x);
    });
    const std::int64_t sequences = std::max<std::int64_t>(1, o.length_tokens / L);
    out.emplace_back(L, run_stream(net, data.validation, data, L, sequences, o.batch, o.seed, current, &accuracy));
  }
  return out;
}

namespace {

nlohmann::json to_json(const lm_result& r) {
  nlohmann::json j = {
      {"loss", r.loss}, {"perplexity", r.perplexity}, {"sequences", r.sequences}, {"targets", r.targets}};
  j["accuracy"] = std::isnan(r.accuracy) ? nlohmann::json(nullptr) : nlohmann::json(r.accuracy);
  return j;
}

}  // namespace

nlohmann::json evaluate_checkpoint(const std::filesystem::path& checkpoint, const token_data& data,
                                   const eval_options& options, const evaluation_parts& parts, bool verbose,
                                   const std::vector<quant_format>& formats) {
  const model_config trained = checkpoint_config(checkpoint);
  auto loaded = std::make_unique<model<float>>(trained);
  const std::int64_t step = load_checkpoint(checkpoint, *loaded, nullptr, nullptr);
  if (trained.embed_proj) {  // fold R1, R2 into the token table and the head: the model users deploy
    auto merged = std::make_unique<model<float>>(merged_config(trained));
    merge_embedding_projection(*loaded, *merged);
    loaded = std::move(merged);
  }
  model<float>& net = *loaded;
  const model_config c = net.config();
  const eval_options o = resolved(options, c);
  const auto t0 = std::chrono::steady_clock::now();
  auto log = [&](const std::string& what) {
    if (!verbose) return;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    fmt::print(stderr, "[{:6.1f}s] {} step {}: {}\n", s, checkpoint.string(), step, what);
  };
  // the config as trained (the report labels runs by it); "merged" says the evaluation ran the merged model
  nlohmann::json j = {{"checkpoint", checkpoint.string()},
                      {"step", step},
                      {"config", pretrain::to_json(trained)},
                      {"merged", trained.embed_proj}};
  if (parts.fp || parts.stats) {
    stats_result stats;
    const lm_result fp = evaluate_fp(net, data, o, parts.stats ? &stats : nullptr);
    j["fp"] = to_json(fp);
    log(fmt::format("FP loss {:.4f} ppl {:.3f}", fp.loss, fp.perplexity));
    if (parts.stats) {
      nlohmann::json modules = nlohmann::json::array();
      for (const module_stats& m : stats.modules) {
        std::vector<std::pair<int, double>> top;
        for (int d : m.outlier_dims) top.emplace_back(d, m.dim_max_abs[static_cast<std::size_t>(d)]);
        std::vector<double> sorted = m.dim_max_abs;
        std::sort(sorted.begin(), sorted.end());
        modules.push_back({{"module", m.module},
                           {"layer", m.layer},
                           {"inf_norm", m.inf_norm},
                           {"kurtosis", m.kurtosis},
                           {"median_dim_max_abs", sorted[sorted.size() / 2]},
                           {"osp_excess_kurtosis", m.osp_excess_kurtosis},
                           {"outlier_dims", top}});
      }
      j["stats"] = {{"max_inf_norm", stats.max_inf_norm},
                    {"avg_kurtosis", stats.avg_kurtosis},
                    {"osp_excess_kurtosis", stats.osp_excess_kurtosis},
                    {"definition",
                     "Pearson kurtosis and inf-norm per sequence over T*d values, averaged over "
                     "sequences; max / mean over modules (REFERENCE 3)"},
                    {"modules", modules}};
      log(fmt::format("max inf-norm {:.2f}, avg kurtosis {:.2f}, OSP excess kurtosis {:.3f}", stats.max_inf_norm,
                      stats.avg_kurtosis, stats.osp_excess_kurtosis));
    }
  }
  if (parts.quantized) {
    std::vector<quant_format> list = formats;
    if (list.empty()) list.push_back({o.weight_bits, o.activation_bits, o.weight_per_channel});
    const std::vector<std::string> listed = quantized_tensors(c);
    nlohmann::json all = nlohmann::json::array();
    for (const quant_format& f : list) {
      eval_options fo = o;
      fo.weight_bits = f.weight_bits;
      fo.activation_bits = f.activation_bits;
      fo.weight_per_channel = f.weight_per_channel;
      const quant_result q = evaluate_quantized(net, data, fo);
      nlohmann::json r = to_json(q.lm);
      r.update({{"format", f.name()},
                {"weight_bits", f.weight_bits},
                {"activation_bits", f.activation_bits},
                {"weight_granularity", f.weight_per_channel ? "channel" : "tensor"},
                {"weight_estimator", o.weight_estimator},
                {"activation_estimator", o.activation_estimator},
                {"calibration", fmt::format("{} batches of {} {} sequences", o.calibration_batches, o.calibration_batch,
                                            o.calibration_split)},
                {"fired", q.fired.size()},
                {"listed", listed.size()}});
      log(fmt::format("{} loss {:.4f} ppl {:.3f} ({} of {} quantizers fired)", f.name(), q.lm.loss, q.lm.perplexity,
                      q.fired.size(), listed.size()));
      all.push_back(r);
    }
    j["quantized"] = all.front();
    j["formats"] = all;
  }
  if (parts.lengths) {
    nlohmann::json lengths = nlohmann::json::array();
    for (const auto& [L, r] : length_study(net, data, o)) {
      nlohmann::json e = to_json(r);
      e["length"] = L;
      lengths.push_back(e);
      log(fmt::format("length {}: loss {:.4f} ppl {:.3f}", L, r.loss, r.perplexity));
    }
    j["lengths"] = lengths;
  }
  return j;
}

}  // namespace pretrain
