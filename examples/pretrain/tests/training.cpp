// Training end to end on real text: the loss falls well below the unigram baseline; resuming from a checkpoint
// equals uninterrupted training bit for bit; checkpoints round-trip and bad ones are refused without damage.

#include <catch2/catch.hpp>
#include <cmath>
#if defined(_OPENMP)
#include <omp.h>
#endif

#include "checkpoint.hpp"
#include "corpus.hpp"
#include "ops.hpp"
#include "support/random.hpp"
#include "trainer.hpp"

using namespace pretrain;

namespace {

train_options micro_options(architecture arch, const std::string& variant, bool gated) {
  train_options o;
  o.model = preset(arch == architecture::bert ? "micro-bert" : "micro-opt");
  o.model.seq_len = 32;
  o.model.gated = gated;
  o.model.softmax = resolve_softmax(variant, arch, o.model.seq_len, NAN, NAN, NAN, NAN);
  o.batch = 8;
  o.lr = 3e-3;
  o.warmup = 20;
  o.weight_decay = 0.01;
  o.beta2 = 0.98;
  o.eval_every = 0;
  o.eval_batches = 16;
  o.quiet = true;
  return o;
}

// ~300 KB of gcide (or the excerpt), tokenized once per test binary; the directory goes when the binary exits.
const token_data& corpus_data() {
  struct holder {
    std::filesystem::path dir = test::scratch("training");
    token_data data = prepare_text(test::small_corpus(dir), 512, 0.05, {}, 2, false);
    ~holder() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  };
  static const holder h;
  return h.data;
}

std::map<std::string, std::vector<float>> tensors_of(const std::filesystem::path& path) {
  std::map<std::string, std::vector<float>> out;
  for (auto& [name, e] : read_safetensors(path).tensors) out[name] = e.values;
  return out;
}

}  // namespace

TEST_CASE("a micro model on real text lowers validation loss well below the unigram baseline") {
  struct run {
    architecture arch;
    const char* variant;
    int seq_len;
    std::int64_t batch, steps;
    double margin;  // nats below the unigram baseline required
  };
  // Measured margins (this corpus, seed 1): OPT vanilla 0.82, OPT NCS 0.85, BERT vanilla 0.16. A masked LM sits on
  // the unigram plateau for its first few hundred steps before it uses context, so BERT's bar is lower and its run
  // longer; a broken attention or backward stays at or above the baseline.
  const run r =
      GENERATE(run{architecture::opt, "vanilla", 32, 8, 250, 0.5}, run{architecture::opt, "ncs", 32, 8, 250, 0.5},
               run{architecture::bert, "vanilla", 64, 16, 300, 0.1});
  INFO((r.arch == architecture::bert ? "bert " : "opt ") << r.variant);
  const token_data& data = corpus_data();
  train_options o = micro_options(r.arch, r.variant, false);
  o.model.seq_len = r.seq_len;
  o.model.softmax = resolve_softmax(r.variant, r.arch, r.seq_len, NAN, NAN, NAN, NAN);
  o.batch = r.batch;
  o.steps = r.steps;
  const double baseline = unigram_baseline(data.train, data.validation, data.vocab);
  const train_result result = train(o, data);
  INFO("unigram baseline " << baseline << " nats, validation loss " << result.validation_loss << " after "
                           << result.step << " steps");
  REQUIRE(result.step == o.steps);
  CHECK(result.validation_loss < baseline - r.margin);
  CHECK(result.train_losses.back() < result.train_losses.front() - 1.0);
}

TEST_CASE("resuming from a checkpoint equals uninterrupted training bit for bit") {
  const auto arch = GENERATE(architecture::opt, architecture::bert);
  const bool gated = GENERATE(false, true);
  INFO((arch == architecture::bert ? "bert" : "opt") << (gated ? " gated" : ""));
  const token_data& data = corpus_data();
  const auto dir = test::scratch("resume");
  train_options o = micro_options(arch, "clipped", gated);
  o.steps = 12;
  o.warmup = 3;

  train_options whole = o;
  whole.out = dir / "whole";
  const train_result a = train(whole, data);

  train_options first = o;
  first.out = dir / "split";
  first.stop_at = 5;
  const train_result b1 = train(first, data);
  REQUIRE(b1.step == 5);
  train_options second = o;
  second.out = dir / "split";
  second.resume = dir / "split" / "checkpoint.safetensors";
  const train_result b2 = train(second, data);
  REQUIRE(b2.step == 12);

  std::vector<double> joined = b1.train_losses;
  joined.insert(joined.end(), b2.train_losses.begin(), b2.train_losses.end());
  CHECK(joined == a.train_losses);  // exact, not approximate
  const auto x = tensors_of(whole.out / "checkpoint.safetensors");
  const auto y = tensors_of(second.out / "checkpoint.safetensors");
  REQUIRE(x.size() == y.size());
  for (const auto& [name, values] : x) {
    INFO(name);
    CHECK(values == y.at(name));  // parameters and both AdamW moments
  }
  // a different seed really changes the run (the comparison above can fail)
  train_options other = whole;
  other.seed = 2;
  other.out = dir / "other";
  CHECK(train(other, data).train_losses != a.train_losses);
  std::filesystem::remove_all(dir);
}

TEST_CASE("training is bit-identical for any thread count") {
#if defined(_OPENMP)
  const token_data& data = corpus_data();
  const auto arch = GENERATE(architecture::opt, architecture::bert);
  train_options o = micro_options(arch, "ncs", true);
  o.steps = 6;
  o.warmup = 2;
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const train_result one = train(o, data);
  omp_set_num_threads(3);  // an odd count splits every block differently from 1 and 2 threads
  const train_result three = train(o, data);
  omp_set_num_threads(saved);
  CHECK(one.train_losses == three.train_losses);
  CHECK(one.validation_loss == three.validation_loss);
#else
  WARN("built without OpenMP: one thread only");
#endif
}

// The allocator decides where a gradient buffer sits; Eigen's vectorized reductions start at the first aligned
// address, so a reduction written with them gave results that changed from run to run (seen in CI as a resume that
// was not bit for bit).
TEST_CASE("the linear layer's gradients do not depend on where their buffers sit in memory") {
  QSAFE_TEST_RNG(rng);
  const index_t N = 37, C = 13, OC = 70;  // odd sizes: packets and scalar tails in every sum
  const auto normal = [&rng](index_t size) {
    std::vector<float> v(static_cast<std::size_t>(size));
    for (float& x : v) x = static_cast<float>(rng.normal());
    return v;
  };
  const auto dout = normal(N * OC), inp = normal(N * C), w = normal(OC * C);
  std::vector<float> first_dw, first_db, first_dinp;
  for (index_t shift = 0; shift < 16; ++shift) {  // 0..15 floats: every offset from a 64-byte line
    std::vector<float> dw(static_cast<std::size_t>(OC * C + 16)), db(static_cast<std::size_t>(OC + 16)),
        dinp(static_cast<std::size_t>(N * C + 16));
    host_ops<float>::matmul_backward(dinp.data() + shift, dw.data() + shift, db.data() + shift, dout.data(), inp.data(),
                                     w.data(), N, C, OC);
    const auto part = [shift](const std::vector<float>& v, index_t size) {
      return std::vector<float>(v.begin() + shift, v.begin() + shift + size);
    };
    if (shift == 0) {
      first_dw = part(dw, OC * C);
      first_db = part(db, OC);
      first_dinp = part(dinp, N * C);
      continue;
    }
    INFO("shifted by " << shift << " floats");
    CHECK(part(db, OC) == first_db);
    CHECK(part(dw, OC * C) == first_dw);
    CHECK(part(dinp, N * C) == first_dinp);
  }
}

TEST_CASE("checkpoints are safetensors with the config in the metadata; bad ones are refused untouched") {
  const token_data& data = corpus_data();
  const auto dir = test::scratch("checkpoint");
  train_options o = micro_options(architecture::opt, "ncs", true);
  o.steps = 2;
  o.warmup = 1;
  o.out = dir / "run";
  train(o, data);
  const auto path = o.out / "checkpoint.safetensors";
  const safetensors_file f = read_safetensors(path);
  model_config c = o.model;
  c.vocab = data.vocab;
  CHECK(config_from_json(nlohmann::json::parse(f.metadata.at("config"))).softmax.beta == c.softmax.beta);
  CHECK(f.metadata.at("step") == "2");
  CHECK(f.tensors.count("layers.1.attn.gate.weight") == 1);
  CHECK(f.tensors.at("embed.tokens.weight").shape == std::vector<std::int64_t>{data.vocab, c.hidden});

  model<float> net(c);
  net.initialize(99);
  const std::vector<float> before(net.parameters().begin(), net.parameters().end());
  SECTION("another config") {
    model_config other = c;
    other.softmax.kind = "vanilla";
    model<float> wrong(other);
    CHECK_THROWS_WITH(load_checkpoint(path, wrong, nullptr, nullptr), Catch::Contains("another config"));
  }
  SECTION("a corrupt file") {
    const std::string bytes = read_file(path);
    write_atomically(dir / "truncated.safetensors", bytes.substr(0, bytes.size() - 100));
    CHECK_THROWS_WITH(load_checkpoint(dir / "truncated.safetensors", net, nullptr, nullptr),
                      Catch::Contains("corrupt"));
    write_atomically(dir / "garbage.safetensors", "\x10\0\0\0\0\0\0\0{not json!}    ");
    CHECK_THROWS_WITH(load_checkpoint(dir / "garbage.safetensors", net, nullptr, nullptr), Catch::Contains("corrupt"));
    CHECK(std::vector<float>(net.parameters().begin(), net.parameters().end()) == before);
  }
  SECTION("a run directory is not overwritten without --overwrite") {
    const std::string bytes = read_file(path);
    CHECK_THROWS_WITH(train(o, data), Catch::Contains("already holds a run"));
    CHECK(read_file(path) == bytes);
  }
  SECTION("loading the checkpoint restores the trained parameters") {
    load_checkpoint(path, net, nullptr, nullptr);
    CHECK(std::vector<float>(net.parameters().begin(), net.parameters().end()) != before);
    CHECK(std::vector<float>(net.parameters().begin(), net.parameters().begin() + 8) ==
          std::vector<float>(f.tensors.at("embed.tokens.weight").values.begin(),
                             f.tensors.at("embed.tokens.weight").values.begin() + 8));
  }
  std::filesystem::remove_all(dir);
}
