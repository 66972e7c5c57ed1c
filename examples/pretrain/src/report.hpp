#pragma once
// The report (docs/evaluation.md): a markdown table like the NCS paper's Table 1 (FP ppl, max ∞-norm, avg
// kurtosis, W8A8 ppl) with one row per run, the sequence-length study, the FP-vs-W8A8 gap over training
// checkpoints and the outlier dimensions; PNG plots drawn with gnuplot (training loss, kurtosis and ∞-norm per
// layer, the gap over checkpoints).
//
// A run directory holds the trainer's metrics.jsonl and any number of `eval*.json` files written by
// `qsafe-pretrain evaluate --out`; the run's table row is its evaluation with the highest step that has
// statistics and a quantized result.

#include <filesystem>
#include <string>
#include <vector>

namespace pretrain {

struct report_options {
  std::vector<std::filesystem::path> runs;
  std::filesystem::path out = "report";  // report.md, *.png, data/ and plots.gp go here
  bool plots = true;                     // run gnuplot (skipped with a warning when it is not installed)
};

struct report_result {
  std::string markdown;
  std::vector<std::filesystem::path> plots;  // the PNG files written
  int rows = 0;                              // rows of the main table
};

/// Reads the runs, writes OUT/report.md (and the plots) and returns the markdown. Throws user_error for a run
/// without a complete evaluation.
report_result write_report(const report_options& options);

}  // namespace pretrain
