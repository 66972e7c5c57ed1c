#pragma once
// Model configuration: architecture, sizes, softmax variant, gated attention; named presets; validation; JSON.
// Paper settings: REFERENCE §4.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "qsafe/softmax_variant.hpp"

namespace pretrain {

/// One clear message for bad input; main() prints it and exits non-zero.
struct user_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class architecture { bert, opt };

/// The softmax variant as configured (parameters already resolved to zeta / gamma / beta).
struct softmax_spec {
  std::string kind = "vanilla";  // vanilla | clipped | ncs | off-by-one
  double zeta = 1.0;
  double gamma = 0.0;  // clipped
  double beta = 1.0;   // ncs
};

using any_variant = std::variant<qsafe::vanilla_softmax, qsafe::clipped_softmax, qsafe::normalized_clipped_softmax,
                                 qsafe::off_by_one_softmax>;

inline any_variant make_variant(const softmax_spec& s) {
  if (s.kind == "vanilla") return qsafe::vanilla_softmax{};
  if (s.kind == "clipped") return qsafe::clipped_softmax{s.zeta, s.gamma};
  if (s.kind == "ncs") return qsafe::normalized_clipped_softmax{s.zeta, s.beta};
  if (s.kind == "off-by-one") return qsafe::off_by_one_softmax{};
  throw user_error("unknown softmax variant '" + s.kind + "' (vanilla, clipped, ncs, off-by-one)");
}

struct model_config {
  architecture arch = architecture::opt;
  int vocab = 0;             // V (set from the tokenizer or the shards)
  int max_positions = 0;     // P, rows of the position table
  int seq_len = 0;           // T, the pretraining length (also the length CS's alpha refers to)
  int layers = 0;            // L
  int hidden = 0;            // C
  int heads = 0;             // NH
  int ffn = 0;               // F
  bool gated = false;        // gated attention (REFERENCE §4)
  int gate_hidden = 0;       // 0: Linear(d_head -> 1) (OPT); > 0: d_head -> gate_hidden -> ReLU -> 1 (BERT)
  double gate_prior = 0.25;  // the gate bias starts at logit(prior)
  double norm_eps = 1e-5;
  softmax_spec softmax;
  // Outlier-safe pretraining options (REFERENCE §4, docs/pretraining.md "OSP"):
  std::string norm = "layernorm";  // layernorm | rmsnorm (a gain per channel) | ssnorm (one scalar gain per norm)
  bool embed_proj = false;         // learnable C×C projections after the token lookup and before the output head
  bool tied_head = true;           // the output head is the token embedding (false: its own V×C matrix)

  int head_dim() const { return hidden / heads; }
  bool is_bert() const { return arch == architecture::bert; }
};

inline std::string to_string(architecture a) {
  return a == architecture::bert ? "bert" : "opt";
}

/// A named preset: tiny and micro sizes train on a laptop; the papers' sizes (REFERENCE §4) run on the CPU for a
/// few steps and are meant for the GPU path. `vocab` stays 0: it comes from the data.
inline model_config preset(const std::string& name) {
  struct row {
    const char* name;
    architecture arch;
    int layers, hidden, heads, seq_len, positions;
  };
  static const row rows[] = {
      {"micro-bert", architecture::bert, 2, 64, 4, 64, 64},
      {"micro-opt", architecture::opt, 2, 64, 4, 64, 64},
      {"tiny-bert", architecture::bert, 4, 128, 4, 128, 128},
      {"tiny-opt", architecture::opt, 4, 128, 4, 128, 128},
      {"bert-small", architecture::bert, 6, 512, 8, 128, 512},
      {"bert-base", architecture::bert, 12, 768, 12, 128, 512},
      {"bert-large", architecture::bert, 24, 1024, 16, 128, 512},
      {"opt-125m", architecture::opt, 12, 768, 12, 512, 2048},
      {"opt-350m", architecture::opt, 24, 1024, 16, 512, 2048},
  };
  for (const row& r : rows) {
    if (name == r.name) {
      model_config c;
      c.arch = r.arch;
      c.layers = r.layers;
      c.hidden = r.hidden;
      c.heads = r.heads;
      c.ffn = 4 * r.hidden;
      c.seq_len = r.seq_len;
      c.max_positions = r.positions;
      c.gate_hidden = r.arch == architecture::bert ? std::max(1, c.head_dim() / 4) : 0;
      c.norm_eps = r.arch == architecture::bert ? 1e-12 : 1e-5;
      return c;
    }
  }
  std::string names;
  for (const row& r : rows) names += std::string(names.empty() ? "" : ", ") + r.name;
  throw user_error("unknown preset '" + name + "' (known: " + names + ")");
}

/// Resolves a variant from the command line's words: `alpha` (CS: gamma = -alpha/T; NCS: beta = 1 - alpha(T-1)/T)
/// or explicit gamma / beta; NaN means "not given". Defaults are the papers' (REFERENCE §1, §4).
inline softmax_spec resolve_softmax(const std::string& kind, architecture arch, int seq_len, double alpha, double zeta,
                                    double gamma, double beta) {
  softmax_spec s;
  s.kind = kind;
  s.zeta = std::isnan(zeta) ? 1.0 : zeta;
  const double default_alpha = arch == architecture::bert ? 3.2 : 12.0;
  if (kind == "clipped") {
    s.gamma = !std::isnan(gamma) ? gamma : -(std::isnan(alpha) ? default_alpha : alpha) / seq_len;
  } else if (kind == "ncs") {
    if (!std::isnan(beta)) {
      s.beta = beta;
    } else if (!std::isnan(alpha) || arch == architecture::bert) {
      const double a = std::isnan(alpha) ? default_alpha : alpha;
      s.beta = 1.0 - a * (seq_len - 1) / seq_len;
    } else {
      s.beta = 0.9;  // OPT in the NCS paper
    }
  }
  try {
    std::visit([](const auto& v) { v.validate("softmax"); }, make_variant(s));
  } catch (const std::invalid_argument& e) {
    throw user_error(std::string("bad softmax parameters: ") + e.what());
  }
  return s;
}

/// Throws `user_error` naming the first problem.
inline void validate(const model_config& c) {
  auto need = [](bool ok, const std::string& what) {
    if (!ok) throw user_error("bad model config: " + what);
  };
  need(c.vocab > 0 && c.vocab <= 65536, "vocab must be in [1, 65536], got " + std::to_string(c.vocab));
  need(c.layers > 0, "layers must be positive");
  need(c.hidden > 0 && c.heads > 0, "hidden and heads must be positive");
  need(c.hidden % c.heads == 0,
       "heads (" + std::to_string(c.heads) + ") must divide hidden (" + std::to_string(c.hidden) + ")");
  need(c.ffn > 0, "ffn must be positive");
  need(c.seq_len > 0, "seq_len must be positive");
  need(c.seq_len <= c.max_positions,
       "seq_len (" + std::to_string(c.seq_len) + ") exceeds max_positions (" + std::to_string(c.max_positions) + ")");
  need(c.gate_hidden >= 0, "gate_hidden must be >= 0");
  need(c.gate_prior > 0 && c.gate_prior < 1, "gate_prior must be in (0, 1)");
  need(c.norm == "layernorm" || c.norm == "rmsnorm" || c.norm == "ssnorm",
       "norm must be layernorm, rmsnorm or ssnorm, got '" + c.norm + "'");
  try {
    std::visit([](const auto& v) { v.validate("softmax"); }, make_variant(c.softmax));
  } catch (const std::invalid_argument& e) {
    throw user_error(std::string("bad softmax parameters: ") + e.what());
  }
}

inline nlohmann::json to_json(const model_config& c) {
  return {{"arch", to_string(c.arch)},
          {"vocab", c.vocab},
          {"max_positions", c.max_positions},
          {"seq_len", c.seq_len},
          {"layers", c.layers},
          {"hidden", c.hidden},
          {"heads", c.heads},
          {"ffn", c.ffn},
          {"gated", c.gated},
          {"gate_hidden", c.gate_hidden},
          {"gate_prior", c.gate_prior},
          {"norm_eps", c.norm_eps},
          {"norm", c.norm},
          {"embed_proj", c.embed_proj},
          {"tied_head", c.tied_head},
          {"softmax",
           {{"kind", c.softmax.kind}, {"zeta", c.softmax.zeta}, {"gamma", c.softmax.gamma}, {"beta", c.softmax.beta}}}};
}

inline model_config config_from_json(const nlohmann::json& j) {
  model_config c;
  const std::string arch = j.at("arch").get<std::string>();
  if (arch != "bert" && arch != "opt") throw user_error("config: unknown arch '" + arch + "'");
  c.arch = arch == "bert" ? architecture::bert : architecture::opt;
  c.vocab = j.at("vocab").get<int>();
  c.max_positions = j.at("max_positions").get<int>();
  c.seq_len = j.at("seq_len").get<int>();
  c.layers = j.at("layers").get<int>();
  c.hidden = j.at("hidden").get<int>();
  c.heads = j.at("heads").get<int>();
  c.ffn = j.at("ffn").get<int>();
  c.gated = j.at("gated").get<bool>();
  c.gate_hidden = j.at("gate_hidden").get<int>();
  c.gate_prior = j.at("gate_prior").get<double>();
  c.norm_eps = j.at("norm_eps").get<double>();
  c.norm = j.value("norm", std::string("layernorm"));  // checkpoints from before issue 7 lack the three
  c.embed_proj = j.value("embed_proj", false);
  c.tied_head = j.value("tied_head", true);
  const auto& s = j.at("softmax");
  c.softmax = {s.at("kind").get<std::string>(), s.at("zeta").get<double>(), s.at("gamma").get<double>(),
               s.at("beta").get<double>()};
  return c;
}

}  // namespace pretrain
