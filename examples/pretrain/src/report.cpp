#include "report.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "config.hpp"
#include "data.hpp"
#include "fmt/core.h"

namespace pretrain {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct run_data {
  std::string name;
  std::vector<std::pair<std::int64_t, double>> train_loss;  // (step, loss)
  std::vector<json> evals;                                  // sorted by step
  json final;                                               // the table row's evaluation
  std::string optimizer = "adamw";                          // from metrics.jsonl's start event
};

bool complete(const json& e) {
  return e.contains("fp") && e.contains("stats") && e.contains("quantized");
}

run_data read_run(const fs::path& dir) {
  if (!fs::is_directory(dir)) throw user_error(fmt::format("report: '{}' is not a run directory", dir.string()));
  run_data r;
  r.name = fs::absolute(dir).lexically_normal().filename().string();
  if (r.name.empty()) r.name = fs::absolute(dir).lexically_normal().parent_path().filename().string();
  std::ifstream metrics(dir / "metrics.jsonl");
  for (std::string line; std::getline(metrics, line);) {
    const json j = json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.value("event", "") == "train") {
      r.train_loss.emplace_back(j.at("step").get<std::int64_t>(), j.at("loss").get<double>());
    }
    if (!j.is_discarded() && j.value("event", "") == "start" && j.contains("training")) {
      r.optimizer = j.at("training").value("optimizer", "adamw");
    }
  }
  std::sort(r.train_loss.begin(), r.train_loss.end());  // a resumed run appends; keep one value per step
  r.train_loss.erase(std::unique(r.train_loss.begin(), r.train_loss.end(),
                                 [](const auto& a, const auto& b) { return a.first == b.first; }),
                     r.train_loss.end());
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string file = entry.path().filename().string();
    if (!file.starts_with("eval") || entry.path().extension() != ".json") continue;
    json j = json::parse(read_file(entry.path()), nullptr, false);
    if (j.is_discarded() || !j.contains("step")) {
      throw user_error(fmt::format("report: '{}' is not an evaluation", entry.path().string()));
    }
    r.evals.push_back(std::move(j));
  }
  std::sort(r.evals.begin(), r.evals.end(), [](const json& a, const json& b) {
    return a.at("step").get<std::int64_t>() < b.at("step").get<std::int64_t>();
  });
  for (const json& e : r.evals)
    if (complete(e)) r.final = e;
  if (r.final.is_null()) {
    throw user_error(fmt::format(
        "report: run '{}' has no complete evaluation (eval*.json with fp, stats and quantized results)", dir.string()));
  }
  return r;
}

std::string number(const json& j, const char* fmt_spec = "{:.2f}") {
  if (!j.is_number()) return "–";
  return fmt::format(fmt::runtime(fmt_spec), j.get<double>());
}

std::string softmax_label(const json& config) {
  const json& s = config.at("softmax");
  const std::string kind = s.at("kind").get<std::string>();
  if (kind == "clipped") return fmt::format("CS (γ = {:.4g})", s.at("gamma").get<double>());
  if (kind == "ncs") return fmt::format("NCS (β = {:.4g})", s.at("beta").get<double>());
  return kind;
}

// How the run was trained: optimizer, norm, embedding projection, head (issue 7's options).
std::string recipe(const run_data& r) {
  const json& c = r.final.at("config");
  std::string s = r.optimizer == "muon" ? "Muon" : "AdamW";
  const std::string norm = c.value("norm", "layernorm");
  s += norm == "ssnorm" ? ", SSNorm" : norm == "rmsnorm" ? ", RMSNorm" : ", LN";
  if (c.value("embed_proj", false)) s += ", EmbProj";
  if (!c.value("tied_head", true) && !c.value("embed_proj", false)) s += ", untied";
  return s;
}

double gap_percent(const json& e) {
  return 100.0 * (e.at("quantized").at("perplexity").get<double>() / e.at("fp").at("perplexity").get<double>() - 1.0);
}

std::string safe(const std::string& name) {
  std::string s = name;
  for (char& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') c = '_';
  return s;
}

}  // namespace

report_result write_report(const report_options& options) {
  if (options.runs.empty()) throw user_error("report: no run directories given");
  std::vector<run_data> runs;
  for (const fs::path& dir : options.runs) runs.push_back(read_run(dir));
  fs::create_directories(options.out / "data");

  report_result result;
  std::ostringstream md;
  const json& q0 = runs.front().final.at("quantized");
  const std::string wa = fmt::format("W{}A{}", q0.at("weight_bits").get<int>(), q0.at("activation_bits").get<int>());
  md << "# Quantizability report\n\n";
  md << fmt::format(
      "Like the NCS paper's Table 1: FP perplexity, max ∞-norm and average kurtosis of the layer outputs (per "
      "sequence over T·d values, averaged over the validation sequences; max / mean over modules, REFERENCE §3; "
      "its excess is kurtosis − 3), OSP's excess kurtosis (per token over the hidden dimension, uncentred, "
      "clipped at 0, averaged over the tokens of every layer output), and the perplexity with every listed weight "
      "and activation quantized ({}, static ranges; docs/evaluation.md).\n\n",
      wa);
  const bool any_bert = std::any_of(runs.begin(), runs.end(),
                                    [](const run_data& r) { return r.final.at("config").at("arch") == "bert"; });
  md << "| run | model | softmax | recipe | step | FP ppl | max ∞-norm | avg kurtosis | excess (κ − 3) | OSP excess "
        "κ | "
     << wa << " ppl | gap |" << (any_bert ? " FP acc | " + wa + " acc |" : "") << " quantizers |\n";
  md << "|---|---|---|---|---|---|---|---|---|---|---|---|" << (any_bert ? "---|---|" : "") << "---|\n";
  for (const run_data& r : runs) {
    const json& e = r.final;
    const json& c = e.at("config");
    const json& q = e.at("quantized");
    const json& st = e.at("stats");
    md << fmt::format(
        "| {} | {} {}L/{}/{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:+.3f}% |", r.name,
        c.at("arch").get<std::string>() == "bert" ? "BERT" : "OPT", c.at("layers").get<int>(),
        c.at("hidden").get<int>(), c.at("heads").get<int>(), softmax_label(c), recipe(r),
        e.at("step").get<std::int64_t>(), number(e.at("fp").at("perplexity")), number(st.at("max_inf_norm"), "{:.1f}"),
        number(st.at("avg_kurtosis"), "{:.1f}"),
        st.at("avg_kurtosis").is_number() ? number(st.at("avg_kurtosis").get<double>() - 3, "{:.2f}") : "–",
        number(st.value("osp_excess_kurtosis", json()), "{:.3f}"), number(q.at("perplexity")), gap_percent(e));
    if (any_bert) {
      md << fmt::format(" {} | {} |", number(e.at("fp").at("accuracy"), "{:.4f}"), number(q.at("accuracy"), "{:.4f}"));
    }
    md << fmt::format(" {}/{} |\n", q.at("fired").get<int>(), q.at("listed").get<int>());
    ++result.rows;
  }
  md << fmt::format("\nQuantizers: weights {}, activations {}, calibration {}.\n",
                    q0.at("weight_estimator").get<std::string>(), q0.at("activation_estimator").get<std::string>(),
                    q0.at("calibration").get<std::string>());

  // every quantized format of the final evaluations (W8A8, W4A8, W4A4, per tensor / per channel)
  std::vector<std::string> formats;
  for (const run_data& r : runs)
    for (const json& f : r.final.value("formats", json::array()))
      if (std::find(formats.begin(), formats.end(), f.at("format").get<std::string>()) == formats.end())
        formats.push_back(f.at("format").get<std::string>());
  if (formats.size() > 1) {
    md << "\n## Quantized formats\n\nPerplexity (and its gap to FP) with weights and activations quantized at "
          "each format; weights per tensor unless marked per-channel (symmetric, one scale per output row).\n\n"
          "| run | FP ppl |";
    for (const std::string& f : formats) md << " " << f << " |";
    md << "\n|---|---|";
    for (std::size_t i = 0; i < formats.size(); ++i) md << "---|";
    md << "\n";
    for (const run_data& r : runs) {
      const double fp = r.final.at("fp").at("perplexity").get<double>();
      md << "| " << r.name << " | " << number(r.final.at("fp").at("perplexity")) << " |";
      for (const std::string& name : formats) {
        std::string cell = "–";
        for (const json& f : r.final.value("formats", json::array())) {
          if (f.at("format") != name) continue;
          const double ppl = f.at("perplexity").get<double>();
          cell = fmt::format("{} ({:+.1f}%)", number(f.at("perplexity")), 100.0 * (ppl / fp - 1.0));
        }
        md << " " << cell << " |";
      }
      md << "\n";
    }
  }

  // sequence-length study
  if (std::any_of(runs.begin(), runs.end(), [](const run_data& r) { return r.final.contains("lengths"); })) {
    std::vector<int> lengths;
    for (const run_data& r : runs)
      for (const json& l : r.final.value("lengths", json::array())) lengths.push_back(l.at("length").get<int>());
    std::sort(lengths.begin(), lengths.end());
    lengths.erase(std::unique(lengths.begin(), lengths.end()), lengths.end());
    md << "\n## Sequence-length study\n\nFP perplexity (BERT: MLM accuracy in brackets) with the validation set "
          "packed at each length; the model was pretrained at the length marked *.\n\n| run |";
    for (int L : lengths) md << " T = " << L << " |";
    md << "\n|---|";
    for (std::size_t i = 0; i < lengths.size(); ++i) md << "---|";
    md << "\n";
    for (const run_data& r : runs) {
      md << "| " << r.name << " |";
      const int T = r.final.at("config").at("seq_len").get<int>();
      for (int L : lengths) {
        std::string cell = "–";
        for (const json& l : r.final.value("lengths", json::array())) {
          if (l.at("length").get<int>() != L) continue;
          cell = number(l.at("perplexity"));
          if (l.at("accuracy").is_number()) cell += " (" + number(l.at("accuracy"), "{:.3f}") + ")";
          if (L == T) cell += " *";
        }
        md << " " << cell << " |";
      }
      md << "\n";
    }
  }

  // gap over checkpoints
  md << "\n## FP vs " << wa << " over training\n\n| run | step | FP ppl | " << wa
     << " ppl | gap |\n|---|---|---|---|---|\n";
  for (const run_data& r : runs) {
    for (const json& e : r.evals) {
      if (!e.contains("fp") || !e.contains("quantized")) continue;
      md << fmt::format("| {} | {} | {} | {} | {:+.3f}% |\n", r.name, e.at("step").get<std::int64_t>(),
                        number(e.at("fp").at("perplexity")), number(e.at("quantized").at("perplexity")),
                        gap_percent(e));
    }
  }

  // outlier dimensions
  md << "\n## Outlier dimensions\n\nHidden dimensions of each layer's output whose max |x| over the validation "
        "tokens exceeds 6x the median dimension's (largest first, with max |x|).\n\n| run | layer | ∞-norm | "
        "kurtosis | median dim max | outlier dims |\n|---|---|---|---|---|---|\n";
  for (const run_data& r : runs) {
    for (const json& m : r.final.at("stats").at("modules")) {
      if (m.at("module") != "output") continue;
      std::string dims;
      int shown = 0;
      for (const json& d : m.at("outlier_dims")) {
        if (shown++ == 5) {
          dims += fmt::format(", … ({} in all)", m.at("outlier_dims").size());
          break;
        }
        dims += fmt::format("{}{} ({:.1f})", dims.empty() ? "" : ", ", d.at(0).get<int>(), d.at(1).get<double>());
      }
      md << fmt::format("| {} | {} | {:.2f} | {:.2f} | {:.2f} | {} |\n", r.name, m.at("layer").get<int>(),
                        m.at("inf_norm").get<double>(), m.at("kurtosis").get<double>(),
                        m.at("median_dim_max_abs").get<double>(), dims.empty() ? "none" : dims);
    }
  }

  // plots
  const fs::path data_dir = options.out / "data";
  std::ostringstream gp;
  gp << "set terminal pngcairo size 1000,600 enhanced font 'sans,10'\nset grid\nset key outside right\n";
  std::vector<std::string> loss_plots, kurt_plots, inf_plots, gap_plots;
  int color = 0;
  for (const run_data& r : runs) {
    const std::string base = safe(r.name);
    ++color;  // one colour per run in every plot
    {
      std::ofstream f(data_dir / (base + "-loss.dat"));
      for (const auto& [s, l] : r.train_loss) f << s << ' ' << l << '\n';
      if (!r.train_loss.empty())
        loss_plots.push_back(
            fmt::format("'data/{}-loss.dat' using 1:2 with lines lc {} title '{}'", base, color, r.name));
    }
    {
      std::ofstream f(data_dir / (base + "-layers.dat"));
      std::map<int, std::map<std::string, std::pair<double, double>>> by_layer;
      for (const json& m : r.final.at("stats").at("modules")) {
        by_layer[m.at("layer").get<int>()][m.at("module").get<std::string>()] = {m.at("kurtosis").get<double>(),
                                                                                 m.at("inf_norm").get<double>()};
      }
      f << "# layer output_kurtosis output_inf_norm ffn_kurtosis ffn_inf_norm\n";
      for (auto& [layer, mods] : by_layer) {
        f << layer << ' ' << mods["output"].first << ' ' << mods["output"].second << ' ' << mods["ffn"].first << ' '
          << mods["ffn"].second << '\n';
      }
      kurt_plots.push_back(
          fmt::format("'data/{0}-layers.dat' using 1:2 with linespoints lc {2} title '{1} output', '' using 1:4 with "
                      "linespoints lc {2} dt 2 title '{1} FFN'",
                      base, r.name, color));
      inf_plots.push_back(
          fmt::format("'data/{0}-layers.dat' using 1:3 with linespoints lc {2} title '{1} output', '' using 1:5 with "
                      "linespoints lc {2} dt 2 title '{1} FFN'",
                      base, r.name, color));
    }
    {
      std::ofstream f(data_dir / (base + "-gap.dat"));
      int points = 0;
      for (const json& e : r.evals) {
        if (!e.contains("fp") || !e.contains("quantized")) continue;
        f << e.at("step").get<std::int64_t>() << ' ' << gap_percent(e) << ' '
          << e.at("fp").at("perplexity").get<double>() << ' ' << e.at("quantized").at("perplexity").get<double>()
          << '\n';
        ++points;
      }
      if (points > 0) {
        gap_plots.push_back(
            fmt::format("'data/{}-gap.dat' using 1:2 with linespoints lc {} title '{}'", base, color, r.name));
      }
    }
  }
  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (const std::string& p : v) s += (s.empty() ? "" : ", ") + p;
    return s;
  };
  std::vector<std::string> pngs;
  if (!loss_plots.empty()) {
    gp << "set output 'loss.png'\nset title 'Training loss'\nset xlabel 'step'\nset ylabel 'loss (nats)'\nplot "
       << join(loss_plots) << "\n";
    pngs.push_back("loss.png");
  }
  gp << "set output 'layers.png'\nset multiplot layout 1,2 title 'Outlier statistics per layer (final "
        "checkpoints)'\nset xlabel 'layer'\nset xtics 1\nset key inside top left\nset title 'avg kurtosis'\nset "
        "ylabel 'kurtosis'\nset logscale y\nplot "
     << join(kurt_plots) << "\nset title 'avg ∞-norm'\nset ylabel '∞-norm'\nplot " << join(inf_plots)
     << "\nunset multiplot\nunset logscale y\nset xtics autofreq\nset key outside right\n";
  pngs.push_back("layers.png");
  if (!gap_plots.empty()) {
    gp << "set output 'gap.png'\nset title 'FP vs " << wa
       << " perplexity gap over training'\nset xlabel 'step'\nset ylabel 'gap (%)'\nplot " << join(gap_plots) << "\n";
    pngs.push_back("gap.png");
  }
  {
    std::ofstream f(options.out / "plots.gp");
    f << gp.str();
  }
  if (options.plots) {
    if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
      fmt::print(stderr, "report: gnuplot not found (apt-get install gnuplot-nox); plots skipped\n");
    } else {
      const std::string cmd = fmt::format("cd '{}' && gnuplot plots.gp 2> plots.log", options.out.string());
      if (std::system(cmd.c_str()) != 0)
        throw user_error("report: gnuplot failed on " + (options.out / "plots.gp").string());
      for (const std::string& p : pngs) result.plots.push_back(options.out / p);
      md << "\n## Plots\n\n";
      for (const std::string& p : pngs) md << "![" << p << "](" << p << ")\n";
    }
  }
  result.markdown = md.str();
  write_atomically(options.out / "report.md", result.markdown);
  return result;
}

}  // namespace pretrain
