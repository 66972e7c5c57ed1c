#include "trainer.hpp"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>

#include "checkpoint.hpp"
#include "fmt/core.h"

namespace pretrain {

void adamw::init(const model<float>& net) {
  const auto n = static_cast<std::size_t>(net.num_parameters());
  m.assign(n, 0.0f);
  v.assign(n, 0.0f);
  decay.assign(n, 0);
  for (const auto& t : net.tensors()) {
    std::fill_n(decay.begin() + t.offset, t.size, static_cast<std::uint8_t>(t.decay ? 1 : 0));
  }
  t = 0;
}

void adamw::step(std::span<float> params, std::span<const float> grads, double lr, const train_options& o) {
  ++t;
  const double c1 = 1.0 - std::pow(o.beta1, static_cast<double>(t));
  const double c2 = 1.0 - std::pow(o.beta2, static_cast<double>(t));
  const auto b1 = static_cast<float>(o.beta1), b2 = static_cast<float>(o.beta2);
  const auto step_size = static_cast<float>(lr / c1), inv_c2 = static_cast<float>(1.0 / c2);
  const auto eps = static_cast<float>(o.eps), wd = static_cast<float>(lr * o.weight_decay);
  const auto n = static_cast<std::int64_t>(params.size());
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < n; ++i) {  // element-wise: the result does not depend on the thread count
    const auto k = static_cast<std::size_t>(i);
    const float g = grads[k];
    m[k] = b1 * m[k] + (1 - b1) * g;
    v[k] = b2 * v[k] + (1 - b2) * g * g;
    if (decay[k] != 0) params[k] -= wd * params[k];
    params[k] -= step_size * m[k] / (std::sqrt(v[k] * inv_c2) + eps);
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
  return {{"batch", o.batch}, {"steps", o.steps}, {"warmup", o.warmup}, {"lr", o.lr},
          {"beta1", o.beta1}, {"beta2", o.beta2}, {"eps", o.eps},       {"weight_decay", o.weight_decay},
          {"clip", o.clip},   {"seed", o.seed}};
}

batch_view view_of(const batch& b) {
  return {b.B, b.T, b.tokens, b.targets, b.lengths};
}

std::string duration(double seconds) {
  const auto s = static_cast<long>(seconds);
  return s >= 3600 ? fmt::format("{}h{:02}m", s / 3600, s / 60 % 60) : fmt::format("{}m{:02}s", s / 60, s % 60);
}

}  // namespace

void save_checkpoint(const std::filesystem::path& path, model<float>& net, const adamw& opt, const train_options& o,
                     std::int64_t step) {
  std::vector<named_tensor> tensors;
  const auto params = net.parameters();
  for (const auto& t : net.tensors()) {
    tensors.push_back({t.name, t.shape, params.data() + t.offset});
  }
  if (!opt.m.empty()) {
    for (const auto& t : net.tensors()) {
      tensors.push_back({"optimizer.m." + t.name, t.shape, opt.m.data() + t.offset});
      tensors.push_back({"optimizer.v." + t.name, t.shape, opt.v.data() + t.offset});
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

std::int64_t load_checkpoint(const std::filesystem::path& path, model<float>& net, adamw* opt, const train_options* o) {
  const safetensors_file f = read_safetensors(path);
  const model_config stored = checkpoint_config(path);
  if (to_json(stored) != to_json(net.config())) {
    throw user_error(fmt::format("checkpoint '{}' is from another config:\n  checkpoint: {}\n  requested:  {}",
                                 path.string(), to_json(stored).dump(), to_json(net.config()).dump()));
  }
  if (o != nullptr) {
    const auto training = nlohmann::json::parse(f.metadata.at("training"), nullptr, false);
    if (training.is_discarded() || training.value("batch", -1) != o->batch ||
        training.value("seed", std::uint64_t{0}) != o->seed) {
      throw user_error(
          fmt::format("checkpoint '{}' was trained with another batch size or seed ({}); an exact "
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
  adamw staged;
  if (opt != nullptr) staged.init(net);
  for (const auto& t : net.tensors()) {
    copy(t.name, t.shape, params.data() + t.offset);
    if (opt != nullptr) {
      copy("optimizer.m." + t.name, t.shape, staged.m.data() + t.offset);
      copy("optimizer.v." + t.name, t.shape, staged.v.data() + t.offset);
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
  adamw opt;
  opt.init(net);
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
          {"unigram_baseline", unigram_baseline(data.train, data.validation, o.model.vocab)}});
  }

  train_result result;
  const auto t0 = std::chrono::steady_clock::now();
  auto last = t0;
  double window_loss = 0;
  std::int64_t window_steps = 0, window_tokens = 0, run_tokens = 0;
  std::int64_t step = start;
  const bool tty = o.progress;
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
    opt.step(net.parameters(), net.gradients(), lr, o);
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
  if (o.eval_every <= 0 || result.validation_loss == 0) {
    result.validation_loss = evaluate(net, data, o.batch, o.eval_batches, o.seed);
  }
  emit({{"event", "end"},
        {"step", step},
        {"validation_loss", result.validation_loss},
        {"tokens_per_second", result.tokens_per_second},
        {"interrupted", result.interrupted}});
  return result;
}

}  // namespace pretrain
