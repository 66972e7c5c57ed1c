#include "trainer.hpp"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>

#include "checkpoint.hpp"
#include "fmt/core.h"
#include "qsafe/newton_schulz.hpp"

namespace pretrain {

void optimizer::init(const model<float>& net, const std::string& k) {
  if (k != "adamw" && k != "muon") throw user_error("unknown optimizer '" + k + "' (adamw, muon)");
  kind = k;
  m.assign(static_cast<std::size_t>(net.num_parameters()), 0.0f);
  v_offset.clear();
  index_t adam_size = 0;
  for (const auto& t : net.tensors()) {
    const bool muon = kind == "muon" && t.hidden_matrix;
    v_offset.push_back(muon ? -1 : adam_size);
    if (!muon) adam_size += t.size;
  }
  v.assign(static_cast<std::size_t>(adam_size), 0.0f);
  t = 0;
}

void optimizer::step(const model<float>& net, std::span<float> params, std::span<const float> grads, double lr,
                     const train_options& o) {
  ++t;
  const auto& tensors = net.tensors();
  // AdamW tensors, element-wise: the result does not depend on the thread count
  const double c1 = 1.0 - std::pow(o.beta1, static_cast<double>(t));
  const double c2 = 1.0 - std::pow(o.beta2, static_cast<double>(t));
  const auto b1 = static_cast<float>(o.beta1), b2 = static_cast<float>(o.beta2);
  const auto step_size = static_cast<float>(lr / c1), inv_c2 = static_cast<float>(1.0 / c2);
  const auto eps = static_cast<float>(o.eps), wd = static_cast<float>(lr * o.weight_decay);
  for (std::size_t k = 0; k < tensors.size(); ++k) {
    if (v_offset[k] < 0) continue;
    const auto& info = tensors[k];
    float* p = params.data() + info.offset;
    const float* g = grads.data() + info.offset;
    float* mk = m.data() + info.offset;
    float* vk = v.data() + v_offset[k];
    const bool decay = info.decay;
#pragma omp parallel for schedule(static) if (info.size > 16384)
    for (index_t i = 0; i < info.size; ++i) {
      mk[i] = b1 * mk[i] + (1 - b1) * g[i];
      vk[i] = b2 * vk[i] + (1 - b2) * g[i] * g[i];
      if (decay) p[i] -= wd * p[i];
      p[i] -= step_size * mk[i] / (std::sqrt(vk[i] * inv_c2) + eps);
    }
  }
  if (kind != "muon") return;
  // Muon: one job per hidden matrix (the fused QKV is three), each on one thread in a fixed order of operations,
  // so the result does not depend on the thread count either (Eigen's products stay single-threaded inside the
  // parallel region).
  struct job {
    index_t offset, rows, cols;
  };
  std::vector<job> jobs;
  for (std::size_t k = 0; k < tensors.size(); ++k) {
    if (v_offset[k] >= 0) continue;
    const auto& info = tensors[k];
    const index_t rows = info.shape[0] / info.blocks, cols = info.size / info.shape[0];
    for (index_t b = 0; b < info.blocks; ++b) jobs.push_back({info.offset + b * rows * cols, rows, cols});
  }
  const auto mu = static_cast<float>(o.muon_momentum);
  const qsafe::newton_schulz_options ns{o.muon_ns_steps, qsafe::newton_schulz_quintic, 1e-8};
  const auto n_jobs = static_cast<std::int64_t>(jobs.size());
#pragma omp parallel for schedule(dynamic)
  for (std::int64_t j = 0; j < n_jobs; ++j) {
    const job& b = jobs[static_cast<std::size_t>(j)];
    const index_t n = b.rows * b.cols;
    float* p = params.data() + b.offset;
    const float* g = grads.data() + b.offset;
    float* buf = m.data() + b.offset;
    row_matrix<float> u(b.rows, b.cols);
    for (index_t i = 0; i < n; ++i) {
      buf[i] = mu * buf[i] + g[i];
      u.data()[i] = g[i] + mu * buf[i];
    }
    const Eigen::MatrixXf orth = qsafe::newton_schulz(u, ns);
    const auto scale = static_cast<float>(lr * 0.2 * std::sqrt(static_cast<double>(std::max(b.rows, b.cols))));
    const auto decay = static_cast<float>(lr * o.weight_decay);
    for (index_t r = 0; r < b.rows; ++r)
      for (index_t c = 0; c < b.cols; ++c) {
        float& w = p[r * b.cols + c];
        w -= scale * orth(r, c) + decay * w;
      }
  }
}

double learning_rate(const train_options& o, std::int64_t s) {
  if (s < o.warmup) return o.lr * static_cast<double>(s + 1) / static_cast<double>(o.warmup);
  const double left =
      static_cast<double>(o.steps - s) / static_cast<double>(std::max<std::int64_t>(1, o.steps - o.warmup));
  return o.lr * std::clamp(left, 0.0, 1.0);
}

namespace {

nlohmann::json options_json(const train_options& o) {
  return {{"batch", o.batch},
          {"steps", o.steps},
          {"warmup", o.warmup},
          {"lr", o.lr},
          {"beta1", o.beta1},
          {"beta2", o.beta2},
          {"eps", o.eps},
          {"weight_decay", o.weight_decay},
          {"clip", o.clip},
          {"seed", o.seed},
          {"optimizer", o.optimizer}};
}

batch_view view_of(const batch& b) {
  return {b.B, b.T, b.tokens, b.targets, b.lengths};
}

std::string duration(double seconds) {
  const auto s = static_cast<long>(seconds);
  return s >= 3600 ? fmt::format("{}h{:02}m", s / 3600, s / 60 % 60) : fmt::format("{}m{:02}s", s / 60, s % 60);
}

}  // namespace

void save_checkpoint(const std::filesystem::path& path, model<float>& net, const optimizer& opt, const train_options& o,
                     std::int64_t step) {
  std::vector<named_tensor> tensors;
  const auto params = net.parameters();
  for (const auto& t : net.tensors()) {
    tensors.push_back({t.name, t.shape, params.data() + t.offset});
  }
  if (!opt.m.empty()) {
    for (std::size_t k = 0; k < net.tensors().size(); ++k) {
      const auto& t = net.tensors()[k];
      if (opt.v_offset[k] < 0) {
        tensors.push_back({"optimizer.momentum." + t.name, t.shape, opt.m.data() + t.offset});
      } else {
        tensors.push_back({"optimizer.m." + t.name, t.shape, opt.m.data() + t.offset});
        tensors.push_back({"optimizer.v." + t.name, t.shape, opt.v.data() + opt.v_offset[k]});
      }
    }
  }
  write_safetensors(path, tensors,
                    {{"format", "qsafe-pretrain-1"},
                     {"config", to_json(net.config()).dump()},
                     {"training", options_json(o).dump()},
                     {"step", std::to_string(step)},
                     {"adam_t", std::to_string(opt.t)}});
}

model_config checkpoint_config(const std::filesystem::path& path) {
  const safetensors_file f = read_safetensors(path);
  auto it = f.metadata.find("config");
  if (it == f.metadata.end() || f.metadata.count("format") == 0 || f.metadata.at("format") != "qsafe-pretrain-1") {
    throw user_error(fmt::format("'{}' is not a qsafe-pretrain checkpoint (no config metadata)", path.string()));
  }
  try {
    return config_from_json(nlohmann::json::parse(it->second));
  } catch (const nlohmann::json::exception& e) {
    throw user_error(fmt::format("checkpoint '{}' has a bad config: {}", path.string(), e.what()));
  }
}

std::int64_t load_checkpoint(const std::filesystem::path& path, model<float>& net, optimizer* opt,
                             const train_options* o) {
  const safetensors_file f = read_safetensors(path);
  const model_config stored = checkpoint_config(path);
  if (to_json(stored) != to_json(net.config())) {
    throw user_error(fmt::format("checkpoint '{}' is from another config:\n  checkpoint: {}\n  requested:  {}",
                                 path.string(), to_json(stored).dump(), to_json(net.config()).dump()));
  }
  if (o != nullptr) {
    const auto training = nlohmann::json::parse(f.metadata.at("training"), nullptr, false);
    if (training.is_discarded() || training.value("batch", -1) != o->batch ||
        training.value("seed", std::uint64_t{0}) != o->seed ||
        training.value("optimizer", std::string("adamw")) != o->optimizer) {
      throw user_error(
          fmt::format("checkpoint '{}' was trained with another batch size, seed or optimizer ({}); an exact "
                      "resume needs the same",
                      path.string(), f.metadata.at("training")));
    }
  }
  auto copy = [&](const std::string& name, const std::vector<index_t>& shape, float* dst) {
    auto it = f.tensors.find(name);
    if (it == f.tensors.end()) throw user_error(fmt::format("checkpoint '{}' lacks tensor '{}'", path.string(), name));
    if (it->second.shape != std::vector<std::int64_t>(shape.begin(), shape.end())) {
      throw user_error(fmt::format("checkpoint '{}': tensor '{}' has another shape", path.string(), name));
    }
    std::copy(it->second.values.begin(), it->second.values.end(), dst);
  };
  // Everything is checked into temporaries first, so a bad file leaves the model untouched.
  std::vector<float> params(net.parameters().begin(), net.parameters().end());
  optimizer staged;
  if (opt != nullptr) staged.init(net, o != nullptr ? o->optimizer : opt->kind);
  for (std::size_t k = 0; k < net.tensors().size(); ++k) {
    const auto& t = net.tensors()[k];
    copy(t.name, t.shape, params.data() + t.offset);
    if (opt != nullptr) {
      if (staged.v_offset[k] < 0) {
        copy("optimizer.momentum." + t.name, t.shape, staged.m.data() + t.offset);
      } else {
        copy("optimizer.m." + t.name, t.shape, staged.m.data() + t.offset);
        copy("optimizer.v." + t.name, t.shape, staged.v.data() + staged.v_offset[k]);
      }
    }
  }
  std::int64_t step = 0;
  try {
    step = std::stoll(f.metadata.at("step"));
    staged.t = std::stoll(f.metadata.at("adam_t"));
  } catch (const std::exception&) {
    throw user_error(fmt::format("checkpoint '{}' has no valid step metadata", path.string()));
  }
  std::copy(params.begin(), params.end(), net.parameters().begin());
  if (opt != nullptr) *opt = std::move(staged);
  return step;
}

double evaluate(model<float>& net, const token_data& data, std::int64_t batch_size, std::int64_t batches,
                std::uint64_t seed) {
  const model_config& c = net.config();
  sampler val(data.validation, c.arch, c.seq_len, data.specials, c.vocab, seed, false);
  batches = std::max<std::int64_t>(1, std::min(batches, val.samples() / batch_size));
  double total = 0;
  std::int64_t count = 0;
  for (std::int64_t i = 0; i < batches; ++i) {
    const batch b = val.get_range(i * batch_size, batch_size);
    const double loss = net.forward(view_of(b));
    total += loss * static_cast<double>(net.last_target_count());
    count += net.last_target_count();
  }
  return count > 0 ? total / static_cast<double>(count) : 0.0;
}

train_result train(train_options o, const token_data& data, const std::atomic<bool>* stop) {
  if (o.model.vocab == 0) o.model.vocab = data.vocab;
  if (o.model.vocab < data.vocab) throw user_error("the model's vocab is smaller than the data's");
  if (o.model.is_bert() && !data.has_specials) {
    throw user_error("BERT needs our tokenizer's [CLS]/[SEP]/[MASK]; pre-tokenized shards are for OPT");
  }
  if (o.batch <= 0 || o.steps <= 0 || o.warmup < 0) throw user_error("batch and steps must be positive");
  validate(o.model);
  model<float> net(o.model);
  net.initialize(o.seed);
  optimizer opt;
  opt.init(net, o.optimizer);
  std::int64_t start = 0;
  if (!o.resume.empty()) start = load_checkpoint(o.resume, net, &opt, &o);
  sampler train_data(data.train, o.model.arch, o.model.seq_len, data.specials, o.model.vocab, o.seed, true);
  sampler{data.validation, o.model.arch, o.model.seq_len, data.specials, o.model.vocab, o.seed, false};  // checks

  const std::filesystem::path ckpt = o.out.empty() ? std::filesystem::path() : o.out / "checkpoint.safetensors";
  std::ofstream metrics;
  if (!o.out.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(o.out, ec);
    if (ec) throw user_error(fmt::format("cannot create '{}': {}", o.out.string(), ec.message()));
    if (std::filesystem::exists(ckpt) && o.resume.empty() && !o.overwrite) {
      throw user_error(fmt::format("'{}' already holds a run; pass --resume {} to continue or --overwrite",
                                   o.out.string(), ckpt.string()));
    }
    metrics.open(o.out / "metrics.jsonl", o.resume.empty() ? std::ios::trunc : std::ios::app);
    if (!metrics) throw user_error(fmt::format("cannot write '{}'", (o.out / "metrics.jsonl").string()));
  }
  auto emit = [&](const nlohmann::json& j) {
    if (metrics) metrics << j.dump() << '\n' << std::flush;
  };
  if (start == 0) {
    emit({{"event", "start"},
          {"config", to_json(o.model)},
          {"training", options_json(o)},
          {"parameters", net.num_parameters()},
          {"optimizer_state_bytes", opt.state_bytes()},
          {"unigram_baseline", unigram_baseline(data.train, data.validation, o.model.vocab)}});
  }

  train_result result;
  const auto t0 = std::chrono::steady_clock::now();
  auto last = t0;
  double window_loss = 0;
  std::int64_t window_steps = 0, window_tokens = 0, run_tokens = 0;
  std::int64_t step = start;
  const bool tty = o.progress;
  double optimizer_seconds = 0;
  while (step < o.steps) {
    const batch b = train_data.get(step, o.batch);
    net.zero_grad();
    const double loss = net.forward(view_of(b));
    net.backward();
    // global gradient-norm clipping (one thread, fixed order: deterministic)
    double sq = 0;
    for (float g : net.gradients()) sq += static_cast<double>(g) * g;
    const double norm = std::sqrt(sq);
    if (!std::isfinite(loss) || !std::isfinite(norm)) {
      throw user_error(fmt::format("training diverged at step {} (loss {}, gradient norm {})", step, loss, norm));
    }
    if (o.clip > 0 && norm > o.clip) {
      const auto scale = static_cast<float>(o.clip / norm);
      for (float& g : net.gradients()) g *= scale;
    }
    const double lr = learning_rate(o, step);
    const auto before_update = std::chrono::steady_clock::now();
    opt.step(net, net.parameters(), net.gradients(), lr, o);
    optimizer_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - before_update).count();
    ++step;
    result.train_losses.push_back(loss);
    window_loss += loss;
    ++window_steps;
    window_tokens += b.B * b.T;
    run_tokens += b.B * b.T;

    const bool stopping = (stop != nullptr && stop->load()) || step == o.stop_at;
    if (step % o.log_every == 0 || step == o.steps || stopping) {
      const auto now = std::chrono::steady_clock::now();
      const double dt = std::chrono::duration<double>(now - last).count();
      const double tps = static_cast<double>(window_tokens) / std::max(dt, 1e-9);
      const double mean = window_loss / static_cast<double>(window_steps);
      emit({{"event", "train"},
            {"step", step},
            {"loss", mean},
            {"lr", lr},
            {"grad_norm", norm},
            {"tokens_per_second", tps}});
      if (!o.quiet) {
        const double eta = static_cast<double>(o.steps - step) * dt / static_cast<double>(window_steps);
        if (tty) {
          fmt::print(stderr, "\r\033[Kstep {}/{} | loss {:.4f} | {:.0f} tok/s | ETA {}", step, o.steps, mean, tps,
                     duration(eta));
        } else {
          fmt::print(stderr, "step {}/{} loss {:.4f} lr {:.3e} grad_norm {:.3f} tok/s {:.0f} eta {}\n", step, o.steps,
                     mean, lr, norm, tps, duration(eta));
        }
      }
      last = now;
      window_loss = 0;
      window_steps = window_tokens = 0;
    }
    if (o.eval_every > 0 && (step % o.eval_every == 0 || step == o.steps)) {
      const double vl = evaluate(net, data, o.batch, o.eval_batches, o.seed);
      result.validation_loss = vl;
      emit({{"event", "validation"}, {"step", step}, {"loss", vl}, {"perplexity", std::exp(vl)}});
      if (!o.quiet)
        fmt::print(stderr, "{}validation step {} loss {:.4f} ppl {:.2f}\n", tty ? "\n" : "", step, vl, std::exp(vl));
      last = std::chrono::steady_clock::now();  // keep evaluation out of the throughput
    }
    const bool periodic = o.save_every > 0 && step % o.save_every == 0;
    if (!ckpt.empty() && (periodic || stopping || step == o.steps)) save_checkpoint(ckpt, net, opt, o, step);
    if (stopping) {
      result.interrupted = stop != nullptr && stop->load();
      if (!o.quiet && result.interrupted)
        fmt::print(stderr, "\ninterrupted: saved {} at step {}\n", ckpt.string(), step);
      break;
    }
  }
  if (tty && !o.quiet) fmt::print(stderr, "\n");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  result.step = step;
  result.tokens_per_second = static_cast<double>(run_tokens) / std::max(seconds, 1e-9);
  const auto steps_run = static_cast<double>(std::max<std::int64_t>(1, step - start));
  result.seconds_per_step = seconds / steps_run;  // includes validation passes when --eval-every is on
  result.optimizer_seconds_per_step = optimizer_seconds / steps_run;
  if (o.eval_every <= 0 || result.validation_loss == 0) {
    result.validation_loss = evaluate(net, data, o.batch, o.eval_batches, o.seed);
  }
  emit({{"event", "end"},
        {"step", step},
        {"validation_loss", result.validation_loss},
        {"tokens_per_second", result.tokens_per_second},
        {"seconds_per_step", result.seconds_per_step},
        {"optimizer_seconds_per_step", result.optimizer_seconds_per_step},
        {"interrupted", result.interrupted}});
  return result;
}

}  // namespace pretrain
