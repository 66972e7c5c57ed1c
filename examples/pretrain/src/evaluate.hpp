#pragma once
// Quantizability evaluation of a reference model, as the papers measure it (REFERENCE §2, §3, §5;
// docs/evaluation.md): FP validation loss / perplexity (BERT: MLM perplexity and accuracy with a fixed masking
// seed), outlier statistics of the layer outputs, the strict W8A8 quantized evaluation (every listed weight and
// activation, per tensor, static activation ranges from calibration, the output head in FP) and the
// sequence-length study. Everything goes through the model's hook points and qsafe's quantizers, estimators and
// statistics; the model's weights are fake-quantized in place and restored afterwards. Weight / activation bit
// widths are a list of formats (W8A8, W4A8, W4A4, ...), weights per tensor (the papers) or per output channel.
// A model trained with embedding projections is evaluated after `merge_embedding_projection` (issue 7).

#include <cstdint>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data.hpp"
#include "model.hpp"

namespace pretrain {

struct eval_options {
  std::int64_t sequences = 1024;  // validation sequences for FP, statistics and quantized evaluation (capped)
  std::int64_t batch = 8;         // sequences per forward
  std::uint64_t seed = 1234;      // BERT's masking seed for validation (fixed, so runs compare)

  // quantization (REFERENCE §2 "strict setting"); empty estimator names mean the paper's choice for the arch
  int weight_bits = 8, activation_bits = 8;
  bool weight_per_channel = false;   // symmetric per output channel (rows of [out, in]) instead of per tensor
  std::string weight_estimator;      // min-max (BERT) | mse (OPT)
  std::string activation_estimator;  // running-min-max (BERT) | percentile (OPT)
  double percentile = 99.999, momentum = 0.9;
  std::int64_t calibration_batches = 0, calibration_batch = 0;  // 0: BERT 16 x 32, OPT 4 x 8
  std::string calibration_split;                                // validation (BERT) | train (OPT)

  // sequence-length study: lengths capped at the model's positions, `length_tokens` tokens each
  std::vector<int> lengths = {32, 64, 128, 256};
  std::int64_t length_tokens = 32768;

  // statistics: dimensions whose max |x| over the validation tokens exceeds `outlier_factor` times the median
  // dimension's max |x| are reported as outlier dimensions
  double outlier_factor = 6.0;
};

/// One quantized evaluation's bit widths and weight granularity; written `w4a8` or `w4a8-channel`.
struct quant_format {
  int weight_bits = 8, activation_bits = 8;
  bool weight_per_channel = false;
  std::string name() const;
};
/// Parses `w<bits>a<bits>[-channel|-tensor]`; without a suffix the granularity is `per_channel_default`.
quant_format parse_format(const std::string& text, bool per_channel_default);

/// Paper defaults filled in for the model's architecture (estimators, calibration).
eval_options resolved(eval_options o, const model_config& c);

struct lm_result {
  double loss = 0, perplexity = 0;
  double accuracy = std::numeric_limits<double>::quiet_NaN();  // BERT: masked-token accuracy
  std::int64_t sequences = 0, targets = 0;
};

/// One module's statistics (REFERENCE §3): per sequence over its T·d values, averaged over sequences.
struct module_stats {
  std::string module;  // output | ffn | attention | norm1 | norm2
  int layer = 0;
  double inf_norm = 0, kurtosis = 0;
  double osp_excess_kurtosis = 0;   // OSP's per-token excess kurtosis (REFERENCE §3), averaged over all tokens
  std::vector<double> dim_max_abs;  // per hidden dimension: max |x| over all validation tokens
  std::vector<int> outlier_dims;    // dims with max |x| > outlier_factor · median dim's max |x|, largest first
};

struct stats_result {
  std::vector<module_stats> modules;
  double max_inf_norm = 0;         // max over modules of the sequence-averaged ∞-norms
  double avg_kurtosis = 0;         // mean over modules of the sequence-averaged kurtosis
  double osp_excess_kurtosis = 0;  // mean over the layer outputs (hidden states) of OSP's per-token excess kurtosis
};

struct quant_result {
  lm_result lm;
  std::vector<std::string> fired;  // the quantizers that acted in the quantized evaluation, in first-use order
};

/// A hook run on every activation before the evaluation's own (tests plant outliers with it).
using pre_hook = hook_function<float>;

/// FP evaluation over the validation stream at the model's length; fills `stats` when given.
lm_result evaluate_fp(model<float>& net, const token_data& data, const eval_options& o, stats_result* stats = nullptr,
                      const pre_hook& pre = {});

/// The strict quantized evaluation: weights fake-quantized in place (restored on return), activation ranges
/// calibrated, then the validation stream with every listed activation fake-quantized.
quant_result evaluate_quantized(model<float>& net, const token_data& data, const eval_options& o,
                                const pre_hook& pre = {});

/// FP loss / perplexity (and BERT accuracy) with the validation stream packed at each length of `o.lengths`.
std::vector<std::pair<int, lm_result>> length_study(model<float>& net, const token_data& data, const eval_options& o);

/// The names of every tensor the strict setting quantizes for this config, in forward order (docs/evaluation.md).
std::vector<std::string> quantized_tensors(const model_config& c);

struct evaluation_parts {
  bool fp = true, stats = true, quantized = true, lengths = true;
};

/// Loads a checkpoint (merging its embedding projections, if any) and runs the asked parts, the quantized
/// evaluation once per format (`formats` empty: the one format of `o`); the result as JSON (the report's input):
/// "quantized" is the first format's result, "formats" all of them.
nlohmann::json evaluate_checkpoint(const std::filesystem::path& checkpoint, const token_data& data,
                                   const eval_options& o, const evaluation_parts& parts, bool verbose,
                                   const std::vector<quant_format>& formats = {});

}  // namespace pretrain
