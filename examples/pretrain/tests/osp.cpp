// Outlier-safe pretraining (issue 7): Muon's update is what docs/pretraining.md says (Nesterov momentum,
// qsafe::newton_schulz, the 0.2·√max(m, n) scale; AdamW elsewhere) with less state than AdamW; Muon + SSNorm +
// embedding projections resume bit for bit and do not depend on the thread count; a checkpoint with projections
// is evaluated merged, with the same FP loss; quantized formats (W4A8, per-channel weights) parse and act.

#include <Eigen/Dense>
#include <catch2/catch.hpp>
#include <cmath>
#if defined(_OPENMP)
#include <omp.h>
#endif

#include "checkpoint.hpp"
#include "corpus.hpp"
#include "evaluate.hpp"
#include "qsafe/newton_schulz.hpp"
#include "support/random.hpp"
#include "trainer.hpp"

using namespace pretrain;

namespace {

const token_data& corpus_data() {
  struct holder {
    std::filesystem::path dir = test::scratch("osp");
    token_data data = prepare_text(test::small_corpus(dir, 150000), 384, 0.05, {}, 2, false);
    ~holder() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  };
  static const holder h;
  return h.data;
}

train_options osp_options() {
  train_options o;
  o.model = preset("micro-opt");
  o.model.seq_len = 32;
  o.model.layers = 2;
  o.model.norm = "ssnorm";
  o.model.embed_proj = true;
  o.model.tied_head = false;
  o.optimizer = "muon";
  o.batch = 8;
  o.lr = 3e-3;
  o.warmup = 2;
  o.steps = 8;
  o.eval_every = 0;
  o.eval_batches = 4;
  o.quiet = true;
  return o;
}

}  // namespace

TEST_CASE("Muon updates each hidden matrix by lr*0.2*sqrt(max(m,n))*NS5(Nesterov momentum); AdamW the rest") {
  QSAFE_TEST_RNG(rng);
  model_config c = preset("micro-opt");
  c.vocab = 50;
  c.layers = 1;
  c.embed_proj = GENERATE(false, true);
  c.tied_head = !c.embed_proj;
  model<float> net(c);
  net.initialize(rng.engine());
  std::vector<float> grads(net.parameters().size());
  for (float& g : grads) g = static_cast<float>(rng.normal(0, 0.01));
  const std::vector<float> before(net.parameters().begin(), net.parameters().end());

  optimizer opt;
  opt.init(net, "muon");
  optimizer adam;
  adam.init(net, "adamw");
  train_options o;
  o.weight_decay = 0;  // the update alone
  const double lr = 0.01;
  opt.step(net, net.parameters(), grads, lr, o);

  index_t hidden = 0, matrices = 0;
  for (std::size_t k = 0; k < net.tensors().size(); ++k) {
    const auto& t = net.tensors()[k];
    INFO(t.name);
    CHECK((opt.v_offset[k] < 0) == t.hidden_matrix);
    const index_t rows = t.shape[0] / t.blocks, cols = t.size / t.shape[0];
    if (t.hidden_matrix) {
      hidden += t.size;
      for (index_t b = 0; b < t.blocks; ++b, ++matrices) {
        const index_t off = t.offset + b * rows * cols;
        Eigen::MatrixXd delta(rows, cols), u(rows, cols);
        for (index_t r = 0; r < rows; ++r)
          for (index_t col = 0; col < cols; ++col) {
            const auto i = static_cast<std::size_t>(off + r * cols + col);
            delta(r, col) = static_cast<double>(net.parameters()[i]) - before[i];
            u(r, col) = 1.95 * grads[i];  // first step: buf = g, u = g + 0.95·buf
          }
        const double scale = lr * 0.2 * std::sqrt(static_cast<double>(std::max(rows, cols)));
        const Eigen::MatrixXd expected = -scale * qsafe::newton_schulz(u);
        // float NS (~1e-5 of the O(1/√n) entries) and the float parameter subtraction (|θ| ~ 0.02, ulp ~ 2e-9 vs
        // an update of ~1e-3/√128): 2e-4 relative to the update's largest entry.
        CHECK((delta - expected).cwiseAbs().maxCoeff() < 2e-4 * expected.cwiseAbs().maxCoeff());
        // so the update's singular values are at most scale times Muon's band's top (1.21), and inside the band
        // for the rectangular (well-conditioned) ones; a square Gaussian's smallest are below NS5's reach
        // (tests/optim/newton_schulz.cpp)
        const Eigen::VectorXd s = Eigen::JacobiSVD<Eigen::MatrixXd>(delta / scale).singularValues();
        CHECK(s.maxCoeff() < 1.22);
        if (rows != cols) CHECK(s.minCoeff() > 0.67);
      }
    } else {
      // AdamW's first step: -lr·m̂/(√v̂ + ε) = -lr·g/(|g| + ε), i.e. -lr·sign(g) for |g| >> ε
      for (index_t i = 0; i < t.size; ++i) {
        const auto j = static_cast<std::size_t>(t.offset + i);
        const double expected = -lr * grads[j] / (std::fabs(grads[j]) + o.eps);
        CHECK(static_cast<double>(net.parameters()[j]) - before[j] == Approx(expected).epsilon(1e-3).margin(1e-9));
      }
    }
  }
  // the QKV counts as three matrices; the projections are hidden matrices too
  CHECK(matrices == c.layers * 6 + (c.embed_proj ? 2 : 0));
  // Muon keeps one float per hidden-matrix parameter (momentum), AdamW two
  CHECK(opt.v.size() == net.parameters().size() - static_cast<std::size_t>(hidden));
  CHECK(adam.state_bytes() - opt.state_bytes() == static_cast<std::size_t>(hidden) * sizeof(float));
  optimizer bad;
  CHECK_THROWS_WITH(bad.init(net, "sgd"), Catch::Contains("unknown optimizer"));
}

TEST_CASE("Muon with single-scale RMSNorm and projections resumes bit for bit, for any thread count") {
  const token_data& data = corpus_data();
  const auto dir = test::scratch("osp-resume");
  train_options whole = osp_options();
  whole.out = dir / "whole";
  const train_result a = train(whole, data);
  REQUIRE(a.step == whole.steps);
  CHECK(std::isfinite(a.validation_loss));
  CHECK(a.train_losses.back() < a.train_losses.front());

  train_options first = osp_options();
  first.out = dir / "split";
  first.stop_at = 3;
  const train_result b1 = train(first, data);
  train_options second = first;
  second.stop_at = -1;
  second.resume = dir / "split" / "checkpoint.safetensors";
  {
    train_options wrong = second;
    wrong.optimizer = "adamw";  // another optimizer's run cannot resume it
    CHECK_THROWS_WITH(train(wrong, data), Catch::Contains("optimizer"));
  }
  const train_result b2 = train(second, data);
  std::vector<double> joined = b1.train_losses;
  joined.insert(joined.end(), b2.train_losses.begin(), b2.train_losses.end());
  CHECK(joined == a.train_losses);
  const auto x = read_safetensors(whole.out / "checkpoint.safetensors").tensors;
  const auto y = read_safetensors(second.out / "checkpoint.safetensors").tensors;
  REQUIRE(x.size() == y.size());
  CHECK(x.count("optimizer.momentum.layers.0.attn.qkv.weight") == 1);  // Muon's state
  CHECK(x.count("optimizer.v.layers.0.attn.qkv.weight") == 0);
  CHECK(x.count("optimizer.v.embed.tokens.weight") == 1);  // AdamW's
  for (const auto& [name, e] : x) {
    INFO(name);
    CHECK(e.values == y.at(name).values);
  }
#if defined(_OPENMP)
  const int saved = omp_get_max_threads();
  train_options t = osp_options();
  t.steps = 4;
  omp_set_num_threads(1);
  const train_result one = train(t, data);
  omp_set_num_threads(3);
  const train_result three = train(t, data);
  omp_set_num_threads(saved);
  CHECK(one.train_losses == three.train_losses);
#endif
  std::filesystem::remove_all(dir);
}

TEST_CASE("a checkpoint with embedding projections is evaluated merged, with the FP loss of the unmerged model") {
  const token_data& data = corpus_data();
  const auto dir = test::scratch("osp-eval");
  train_options o = osp_options();
  o.steps = 30;
  o.out = dir;
  train(o, data);
  const auto ckpt = dir / "checkpoint.safetensors";
  model<float> net(checkpoint_config(ckpt));
  load_checkpoint(ckpt, net, nullptr, nullptr);
  eval_options e;
  e.sequences = 16;
  e.calibration_batches = 2;
  e.calibration_batch = 4;
  const lm_result unmerged = evaluate_fp(net, data, e);
  CHECK_THROWS_WITH(evaluate_quantized(net, data, e), Catch::Contains("merged"));

  const std::vector<quant_format> formats = {parse_format("w8a8", false), parse_format("w4a16", false),
                                             parse_format("w4a16-channel", false), parse_format("w16a16", true)};
  const nlohmann::json j = evaluate_checkpoint(ckpt, data, e, {true, true, true, false}, false, formats);
  CHECK(j.at("merged").get<bool>());
  CHECK(j.at("config").at("embed_proj").get<bool>());  // labelled as trained
  const double fp = j.at("fp").at("loss").get<double>();
  // the same model reassociated in float (e·R1ᵀ folded into the table): ~1e-6 relative on the loss
  CHECK(fp == Approx(unmerged.loss).epsilon(1e-5));
  REQUIRE(j.at("formats").size() == 4);
  CHECK(j.at("quantized") == j.at("formats")[0]);
  for (const auto& f : j.at("formats")) CHECK(f.at("fired") == f.at("listed"));
  const auto ppl = [&](int k) { return j.at("formats")[static_cast<std::size_t>(k)].at("perplexity").get<double>(); };
  const double fp_ppl = j.at("fp").at("perplexity").get<double>();
  INFO("FP " << fp_ppl << ", W8A8 " << ppl(0) << ", W4A16 tensor " << ppl(1) << ", W4A16 channel " << ppl(2)
             << ", W16A16 channel " << ppl(3));
  // 16-bit per-channel weights and activations: ~1e-5 of each range, invisible in the perplexity
  CHECK(ppl(3) == Approx(fp_ppl).epsilon(2e-3));
  // 4-bit weights cost more with one scale per tensor than with one per output row: the token table's rows (and
  // each layer's rows) differ in range, which one scale cannot follow (7 levels for the largest row)
  CHECK(std::fabs(ppl(2) - fp_ppl) < std::fabs(ppl(1) - fp_ppl));
  CHECK(j.at("formats")[2].at("weight_granularity") == "channel");
  CHECK(j.at("stats").at("osp_excess_kurtosis").get<double>() >= 0);
  std::filesystem::remove_all(dir);
}

TEST_CASE("quantized formats parse as w<bits>a<bits>[-channel|-tensor]") {
  const quant_format a = parse_format("w4a8", false);
  CHECK(a.weight_bits == 4);
  CHECK(a.activation_bits == 8);
  CHECK_FALSE(a.weight_per_channel);
  CHECK(a.name() == "W4A8");
  CHECK(parse_format("W4A4-channel", false).weight_per_channel);
  CHECK(parse_format("w4a4", true).weight_per_channel);
  CHECK_FALSE(parse_format("w4a4-tensor", true).weight_per_channel);
  CHECK(parse_format("w8a8-channel", false).name() == "W8A8 per-channel");
  for (const char* bad : {"w4", "w4a8x", "a8w4", "w1a8", "w4a17", "", "w4a8-row"}) {
    INFO(bad);
    CHECK_THROWS_AS(parse_format(bad, false), user_error);
  }
}
