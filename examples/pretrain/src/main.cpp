// qsafe-pretrain: pretrain the reference BERT / OPT models on the CPU (see docs/pretraining.md).
//
//   qsafe-pretrain prepare [--source /usr/share/dictd/gcide.dict.dz] [--out data/gcide.txt]
//   qsafe-pretrain train --preset tiny-opt --corpus data/gcide.txt --softmax ncs --out runs/tiny-opt-ncs
//   qsafe-pretrain train --preset tiny-opt --optimizer muon --norm ssnorm --embed-proj --out runs/tiny-opt-osp
//   qsafe-pretrain merge --checkpoint runs/tiny-opt-osp/checkpoint.safetensors --out merged.safetensors

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cmath>
#include <csignal>
#include <limits>

#include "data.hpp"
#include "evaluate.hpp"
#include "fmt/core.h"
#include "report.hpp"
#include "trainer.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace {

std::atomic<bool> interrupted{false};  // set by SIGINT; the training loop saves and returns

extern "C" void on_sigint(int) {
  interrupted.store(true);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace pretrain;
  CLI::App app{"Pretrain the qsafe reference BERT / OPT models on the CPU (REFERENCE §4)"};
  app.require_subcommand(1);

  // prepare ------------------------------------------------------------------------------------------------------
  auto* prepare = app.add_subcommand("prepare",
                                     "Clean the GNU Collaborative International Dictionary of English "
                                     "(Debian's dict-gcide) to plain text, one paragraph per line");
  std::string source = "/usr/share/dictd/gcide.dict.dz", prepared = "data/gcide.txt";
  prepare->add_option("--source", source, "the gcide .dict or .dict.dz file")->capture_default_str();
  prepare->add_option("--out", prepared, "the plain-text corpus to write")->capture_default_str();

  // train --------------------------------------------------------------------------------------------------------
  auto* trainc = app.add_subcommand("train", "Pretrain a model (metrics as JSON lines in OUT/metrics.jsonl)");
  std::string preset_name = "tiny-opt", corpus = "data/gcide.txt", train_bin, val_bin, cache_dir, softmax = "vanilla";
  std::string out = "runs/default", resume;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  double alpha = nan, zeta = nan, gamma = nan, beta = nan, lr = nan, wd = nan, beta1 = nan, beta2 = nan, eps = nan;
  double clip = 1.0, val_fraction = 0.01;
  int vocab_size = 4096, threads = 0, seq_len = 0, layers = 0, hidden = 0, heads = 0;
  bool gated = false, overwrite = false, progress = false, no_progress = false, embed_proj = false, untied = false;
  std::string norm = "layernorm";
  double norm_eps = nan;
  train_options o;
  trainc
      ->add_option("--preset", preset_name,
                   "micro-bert, micro-opt, tiny-bert, tiny-opt, bert-small, bert-base, bert-large, opt-125m, "
                   "opt-350m")
      ->capture_default_str();
  trainc->add_option("--corpus", corpus, "text file or directory (one document per line)")->capture_default_str();
  trainc->add_option("--train-bin", train_bin, "llm.c uint16 .bin shard(s) for training (instead of --corpus)");
  trainc->add_option("--val-bin", val_bin, "llm.c uint16 .bin shard(s) for validation");
  trainc->add_option("--cache-dir", cache_dir, "where the tokenizer and token caches go (default: beside corpus)");
  trainc->add_option("--vocab-size", vocab_size, "tokenizer vocabulary size")->capture_default_str();
  trainc->add_option("--val-fraction", val_fraction, "share of documents held out")->capture_default_str();
  trainc->add_option("--softmax", softmax, "vanilla | clipped | ncs | off-by-one")->capture_default_str();
  trainc->add_option("--alpha", alpha, "CS: gamma = -alpha/T; NCS: beta = 1 - alpha(T-1)/T (BERT 3.2, OPT 12)");
  trainc->add_option("--zeta", zeta, "CS/NCS zeta (default 1)");
  trainc->add_option("--gamma", gamma, "CS gamma (overrides alpha)");
  trainc->add_option("--beta", beta, "NCS beta (default: BERT from alpha, OPT 0.9)");
  trainc->add_flag("--gated", gated, "gated attention (REFERENCE §4)");
  trainc->add_option("--norm", norm, "layernorm | rmsnorm | ssnorm (single-scale RMSNorm, OSP)")->capture_default_str();
  trainc->add_option("--norm-eps", norm_eps, "norm epsilon (default BERT 1e-12; OPT 1e-5 LayerNorm, 1e-6 RMSNorms)");
  trainc->add_flag("--embed-proj", embed_proj,
                   "OSP's learnable CxC projections after the token lookup and before the output head (implies "
                   "--untied-head; `merge` folds them away)");
  trainc->add_flag("--untied-head", untied, "an output head of its own instead of the token embedding");
  trainc->add_option("--optimizer", o.optimizer, "adamw | muon (Muon on hidden matrices, AdamW on the rest)")
      ->capture_default_str();
  trainc->add_option("--muon-momentum", o.muon_momentum, "Muon's Nesterov momentum")->capture_default_str();
  trainc->add_option("--ns-steps", o.muon_ns_steps, "Muon's Newton-Schulz steps")->capture_default_str();
  trainc->add_option("--seq-len", seq_len, "override the preset's sequence length T");
  trainc->add_option("--layers", layers, "override the preset's layer count");
  trainc->add_option("--hidden", hidden, "override the preset's hidden size (ffn = 4x)");
  trainc->add_option("--heads", heads, "override the preset's head count");
  trainc->add_option("--batch", o.batch, "sequences per step")->capture_default_str();
  trainc->add_option("--steps", o.steps, "total steps (the schedule decays to 0 here)")->capture_default_str();
  trainc->add_option("--warmup", o.warmup, "warmup steps")->capture_default_str();
  trainc->add_option("--lr", lr, "peak learning rate (default 1e-3)");
  trainc->add_option("--weight-decay", wd, "AdamW weight decay on matrices (BERT 0.01, OPT 0.1)");
  trainc->add_option("--beta1", beta1, "AdamW beta1 (0.9)");
  trainc->add_option("--beta2", beta2, "AdamW beta2 (BERT 0.98, OPT 0.95)");
  trainc->add_option("--adam-eps", eps, "AdamW epsilon (BERT 1e-6, OPT 1e-8)");
  trainc->add_option("--clip", clip, "gradient-norm clip (0: off)")->capture_default_str();
  trainc->add_option("--seed", o.seed, "seed for init, data order and masking")->capture_default_str();
  trainc->add_option("--eval-every", o.eval_every, "validate every N steps (0: at the end)")->capture_default_str();
  trainc->add_option("--eval-batches", o.eval_batches, "validation batches")->capture_default_str();
  trainc->add_option("--log-every", o.log_every, "log every N steps")->capture_default_str();
  trainc->add_option("--save-every", o.save_every, "checkpoint every N steps (0: at the end and on SIGINT)");
  trainc->add_option("--stop-at", o.stop_at, "stop (and save) after this many steps, as an interruption would");
  trainc->add_option("--out", out, "run directory: checkpoint.safetensors, metrics.jsonl")->capture_default_str();
  trainc->add_option("--resume", resume, "continue exactly from this checkpoint");
  trainc->add_flag("--overwrite", overwrite, "replace an existing run in --out");
  trainc->add_flag("--progress", progress, "force the one-line progress display");
  trainc->add_flag("--no-progress", no_progress, "force plain log lines");
  trainc->add_option("--threads", threads, "OpenMP / Eigen threads (0: all cores)")->capture_default_str();

  // evaluate / report (issue 6; docs/evaluation.md) ----------------------------------------------------------------
  auto* evalc = app.add_subcommand("evaluate",
                                   "FP and quantized (W8A8, W4A8, W4A4, ...) perplexity, outlier statistics and the "
                                   "sequence-length study of a checkpoint; JSON for `report`");
  std::string checkpoint, eval_out;
  eval_options eo;
  bool no_stats = false, no_quantized = false, no_lengths = false;
  evalc->add_option("--checkpoint", checkpoint, "checkpoint.safetensors to evaluate")->required();
  evalc->add_option("--out", eval_out, "write the result JSON here (a run directory's eval*.json)");
  evalc->add_option("--corpus", corpus, "the corpus the model was trained on (same tokenizer)")->capture_default_str();
  evalc->add_option("--train-bin", train_bin, "llm.c uint16 .bin shard(s) for training (calibration)");
  evalc->add_option("--val-bin", val_bin, "llm.c uint16 .bin shard(s) for validation");
  evalc->add_option("--cache-dir", cache_dir, "where the tokenizer and token caches are (as for train)");
  evalc->add_option("--vocab-size", vocab_size, "tokenizer vocabulary size (as for train)")->capture_default_str();
  evalc->add_option("--val-fraction", val_fraction, "share of documents held out (as for train)")
      ->capture_default_str();
  evalc->add_option("--sequences", eo.sequences, "validation sequences (capped at what there is)")
      ->capture_default_str();
  evalc->add_option("--batch", eo.batch, "sequences per forward")->capture_default_str();
  evalc->add_option("--seed", eo.seed, "masking seed for BERT's validation")->capture_default_str();
  evalc->add_option("--weight-bits", eo.weight_bits, "weight bits (W8A8: 8, W4A8: 4)")->capture_default_str();
  evalc->add_option("--activation-bits", eo.activation_bits, "activation bits")->capture_default_str();
  std::vector<std::string> format_names;
  std::string granularity = "tensor";
  evalc
      ->add_option("--formats", format_names,
                   "quantized formats to evaluate, e.g. w8a8,w4a8,w4a4,w4a8-channel (default: --weight-bits / "
                   "--activation-bits)")
      ->delimiter(',');
  evalc
      ->add_option("--weight-granularity", granularity,
                   "tensor | channel: weights per tensor (the papers) or per output channel (formats without a "
                   "-tensor / -channel suffix)")
      ->capture_default_str();
  evalc->add_option("--weight-estimator", eo.weight_estimator, "min-max | mse (default: BERT min-max, OPT mse)");
  evalc->add_option("--activation-estimator", eo.activation_estimator,
                    "running-min-max | percentile | min-max (default: BERT running-min-max, OPT percentile)");
  evalc->add_option("--percentile", eo.percentile, "percentile estimator's p")->capture_default_str();
  evalc->add_option("--momentum", eo.momentum, "running estimators' momentum")->capture_default_str();
  evalc->add_option("--calibration-batches", eo.calibration_batches, "calibration batches (default BERT 16, OPT 4)");
  evalc->add_option("--calibration-batch", eo.calibration_batch, "sequences per calibration batch (BERT 32, OPT 8)");
  evalc->add_option("--calibration-split", eo.calibration_split, "train | validation (BERT validation, OPT train)");
  evalc->add_option("--lengths", eo.lengths, "sequence-length study lengths (capped at the model's positions)")
      ->capture_default_str();
  evalc->add_option("--length-tokens", eo.length_tokens, "validation tokens per length")->capture_default_str();
  evalc->add_flag("--no-stats", no_stats, "skip the outlier statistics");
  evalc->add_flag("--no-quantized", no_quantized, "skip the quantized evaluation");
  evalc->add_flag("--no-lengths", no_lengths, "skip the sequence-length study");
  evalc->add_option("--threads", threads, "OpenMP / Eigen threads (0: all cores)")->capture_default_str();

  auto* mergec = app.add_subcommand("merge",
                                    "Fold a checkpoint's embedding projections into the token table and the output "
                                    "head (same outputs, no projections; no optimizer state)");
  std::string merge_in, merge_out;
  mergec->add_option("--checkpoint", merge_in, "checkpoint.safetensors trained with --embed-proj")->required();
  mergec->add_option("--out", merge_out, "the merged checkpoint to write")->required();

  auto* reportc = app.add_subcommand("report", "Markdown table (like the NCS paper's Table 1) and gnuplot PNGs");
  report_options ro;
  bool no_plots = false;
  std::string report_out = ro.out.string();
  reportc->add_option("runs", ro.runs, "run directories (metrics.jsonl and eval*.json)")->required();
  reportc->add_option("--out", report_out, "report directory")->capture_default_str();
  reportc->add_flag("--no-plots", no_plots, "do not run gnuplot");

  CLI11_PARSE(app, argc, argv);

  try {
    if (*prepare) {
      fmt::print(stderr, "cleaning {} ...\n", source);
      const std::string text = clean_gcide(read_file(source));
      if (text.empty()) throw user_error(fmt::format("'{}' holds no gcide entries", source));
      const std::filesystem::path path(prepared);
      if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
      write_atomically(path, text);
      fmt::print(stderr, "wrote {} ({:.1f} MB, {} paragraphs)\n", prepared, static_cast<double>(text.size()) / 1e6,
                 std::count(text.begin(), text.end(), '\n'));
      return 0;
    }

#if defined(_OPENMP)
    if (threads > 0) omp_set_num_threads(threads);
#endif
    if (*mergec) {
      const model_config c = checkpoint_config(merge_in);
      model<float> net(c);
      const std::int64_t step = load_checkpoint(merge_in, net, nullptr, nullptr);
      model<float> merged(merged_config(c));
      merge_embedding_projection(net, merged);
      const optimizer no_state;  // a merged model is for evaluation: no optimizer state
      save_checkpoint(merge_out, merged, no_state, o, step);
      fmt::print(stderr, "merged {} -> {} ({} -> {} parameters)\n", merge_in, merge_out, net.num_parameters(),
                 merged.num_parameters());
      return 0;
    }
    if (*reportc) {
      ro.out = report_out;
      ro.plots = !no_plots;
      const report_result r = write_report(ro);
      fmt::print("{}", r.markdown);
      fmt::print(stderr, "report: {}\n", (ro.out / "report.md").string());
      for (const auto& p : r.plots) fmt::print(stderr, "plot: {}\n", p.string());
      return 0;
    }
    if (*evalc) {
      const model_config stored = checkpoint_config(checkpoint);
      const token_data data =
          !train_bin.empty() || !val_bin.empty()
              ? (train_bin.empty() || val_bin.empty() ? throw user_error("--train-bin and --val-bin go together")
                                                      : prepare_shards(train_bin, val_bin, stored.vocab))
              : prepare_text(corpus, vocab_size, val_fraction, cache_dir, threads, false);
      if (data.vocab > stored.vocab) {
        throw user_error(
            fmt::format("the data's vocabulary ({}) is larger than the checkpoint's ({}): pass the "
                        "corpus and --vocab-size the model was trained with",
                        data.vocab, stored.vocab));
      }
      if (granularity != "tensor" && granularity != "channel") {
        throw user_error("--weight-granularity must be tensor or channel, got '" + granularity + "'");
      }
      eo.weight_per_channel = granularity == "channel";
      std::vector<quant_format> formats;
      for (const std::string& f : format_names) formats.push_back(parse_format(f, eo.weight_per_channel));
      const nlohmann::json j =
          evaluate_checkpoint(checkpoint, data, eo, {true, !no_stats, !no_quantized, !no_lengths}, true, formats);
      if (!eval_out.empty()) write_atomically(eval_out, j.dump(1) + "\n");
      return 0;
    }
    model_config c = preset(preset_name);
    const bool bert = c.is_bert();
    if (seq_len > 0) c.seq_len = seq_len;
    if (layers > 0) c.layers = layers;
    if (hidden > 0) c.hidden = hidden, c.ffn = 4 * hidden;
    if (heads > 0) c.heads = heads;
    if (c.seq_len > c.max_positions) c.max_positions = c.seq_len;
    if (c.hidden % c.heads != 0) {
      throw user_error(fmt::format("heads ({}) must divide hidden ({})", c.heads, c.hidden));
    }
    if (bert && c.gate_hidden > 0) c.gate_hidden = std::max(1, c.head_dim() / 4);
    c.gated = gated;
    c.norm = norm;
    c.embed_proj = embed_proj;
    c.tied_head = !(untied || embed_proj);
    if (!std::isnan(norm_eps)) {
      c.norm_eps = norm_eps;
    } else if (!bert && norm != "layernorm") {
      c.norm_eps = 1e-6;  // OSP's RMSNorm epsilon (REFERENCE §4)
    }
    {
      model_config checked = c;
      checked.vocab = 1;  // the vocabulary comes from the data later; check the rest before preparing it
      validate(checked);
    }
    if (o.optimizer != "adamw" && o.optimizer != "muon") {
      throw user_error("--optimizer must be adamw or muon, got '" + o.optimizer + "'");
    }
    c.softmax = resolve_softmax(softmax, c.arch, c.seq_len, alpha, zeta, gamma, beta);
    if (bert && c.seq_len < 3) throw user_error("BERT needs a sequence length of at least 3 ([CLS] x [SEP])");

    o.model = c;
    o.lr = std::isnan(lr) ? 1e-3 : lr;
    o.weight_decay = std::isnan(wd) ? (bert ? 0.01 : 0.1) : wd;
    o.beta1 = std::isnan(beta1) ? 0.9 : beta1;
    o.beta2 = std::isnan(beta2) ? (bert ? 0.98 : 0.95) : beta2;
    o.eps = std::isnan(eps) ? (bert ? 1e-6 : 1e-8) : eps;
    o.clip = clip;
    o.out = out;
    o.resume = resume;
    o.overwrite = overwrite;
    o.progress = progress || (!no_progress && isatty(STDERR_FILENO) != 0);
    if (o.log_every <= 0) throw user_error("--log-every must be positive");
    if (o.warmup >= o.steps) throw user_error("--warmup must be smaller than --steps");

    const token_data data =
        !train_bin.empty() || !val_bin.empty()
            ? (train_bin.empty() || val_bin.empty() ? throw user_error("--train-bin and --val-bin go together")
                                                    : prepare_shards(train_bin, val_bin, c.vocab))
            : prepare_text(corpus, vocab_size, val_fraction, cache_dir, threads, true);
    std::signal(SIGINT, on_sigint);
    {
      model_config shown = o.model;
      shown.vocab = o.model.vocab > 0 ? o.model.vocab : data.vocab;
      fmt::print(stderr, "{} | train {} tokens, validation {} tokens | unigram baseline {:.4f} nats\n",
                 to_json(shown).dump(), data.train.size(), data.validation.size(),
                 unigram_baseline(data.train, data.validation, shown.vocab));
    }
    const train_result r = train(o, data, &interrupted);
    fmt::print(stderr,
               "done: step {}, validation loss {:.4f} (ppl {:.2f}), {:.0f} tokens/s, {:.1f} ms/step of which the "
               "{} update {:.1f} ms\n",
               r.step, r.validation_loss, std::exp(r.validation_loss), r.tokens_per_second, 1e3 * r.seconds_per_step,
               o.optimizer, 1e3 * r.optimizer_seconds_per_step);
    return r.interrupted ? 130 : 0;
  } catch (const user_error& e) {
    fmt::print(stderr, "qsafe-pretrain: error: {}\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "qsafe-pretrain: internal error: {}\n", e.what());
    return 2;
  }
}
