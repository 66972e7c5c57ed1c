// Whole-model gradient check in double: the hand-written backward against central differences of the loss, for
// every parameter tensor of both models, every softmax variant, with and without gated attention, with clipped
// entries present.

#include <catch2/catch.hpp>
#include <cmath>
#include <vector>

#include "model.hpp"
#include "support/random.hpp"

namespace {

using pretrain::architecture;
using pretrain::model_config;

model_config micro(architecture arch, const std::string& variant, bool gated) {
  model_config c;
  c.arch = arch;
  c.vocab = 13;
  c.max_positions = 8;
  c.seq_len = 6;
  c.layers = 2;
  c.hidden = 8;
  c.heads = 2;
  c.ffn = 12;
  c.gated = gated;
  c.gate_hidden = arch == architecture::bert ? 2 : 0;
  c.norm_eps = 1e-5;
  c.softmax.kind = variant;
  // Large enough clipping that, with the scores spread below, many entries are clipped at 0 and some at 1.
  c.softmax.zeta = 1.6;
  c.softmax.gamma = -0.15;
  c.softmax.beta = arch == architecture::bert ? -0.5 : 0.9;
  return c;
}

}  // namespace

TEST_CASE("the hand-written backward matches central differences for every parameter tensor") {
  QSAFE_TEST_RNG(rng);
  const auto arch = GENERATE(architecture::bert, architecture::opt);
  const std::string variant = GENERATE("vanilla", "clipped", "ncs", "off-by-one");
  const bool gated = GENERATE(false, true);
  INFO((arch == architecture::bert ? "bert" : "opt") << " " << variant << (gated ? " gated" : ""));

  const model_config c = micro(arch, variant, gated);
  pretrain::model<double> net(c);
  net.initialize(rng.engine(), 0.5);  // wide weights: peaked softmax rows, so the clip is active
  // Randomize the norm gains / biases and the gate biases too, so no gradient is trivially structured.
  for (const auto& t : net.tensors()) {
    if (t.decay) continue;
    for (pretrain::index_t i = 0; i < t.size; ++i)
      net.parameters()[static_cast<std::size_t>(t.offset + i)] += rng.normal(0, 0.3);
  }

  const pretrain::index_t B = 2, T = c.seq_len;
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(B * T)), targets(tokens.size(), -1), lengths;
  for (auto& t : tokens) t = static_cast<std::int32_t>(rng.integer(0, c.vocab - 1));
  for (std::size_t i = 0; i < targets.size(); ++i) {
    // BERT predicts a subset of positions; OPT every position.
    if (arch == architecture::opt || rng.coin(0.6)) targets[i] = static_cast<std::int32_t>(rng.integer(0, c.vocab - 1));
  }
  targets[0] = 3;  // at least one target
  if (arch == architecture::bert) lengths = {static_cast<std::int32_t>(T), static_cast<std::int32_t>(T - 2)};
  const pretrain::batch_view batch{B, T, tokens, targets, lengths};

  net.zero_grad();
  const double loss = net.forward(batch);
  REQUIRE(std::isfinite(loss));
  net.backward();
  const std::vector<double> analytic(net.gradients().begin(), net.gradients().end());

  // The clipping variants must actually clip (at 0, and for zeta > 1 at 1) in this configuration, or the test
  // would not cover the clipped regions' blocked gradient.
  if (variant == "clipped" || variant == "ncs") {
    int clipped_low = 0, clipped_high = 0;
    for (int l = 0; l < c.layers; ++l) {
      const auto y = net.attention_probabilities(l);
      for (pretrain::index_t r = 0; r < B * c.heads * T; ++r) {
        const pretrain::index_t b = r / (c.heads * T), q = r % T;
        const pretrain::index_t valid = arch == architecture::opt ? q + 1 : lengths[static_cast<std::size_t>(b)];
        for (pretrain::index_t j = 0; j < valid; ++j) {
          const double v = y[static_cast<std::size_t>(r * T + j)];
          clipped_low += v == 0.0;
          clipped_high += v == 1.0;
        }
      }
    }
    INFO("clipped at 0: " << clipped_low << ", at 1: " << clipped_high);
    CHECK(clipped_low > 10);
    CHECK(clipped_high > 0);
  }

  const double h = 1e-5;
  for (const auto& t : net.tensors()) {
    INFO("tensor " << t.name);
    // every tensor receives some gradient
    double largest = 0;
    for (pretrain::index_t i = 0; i < t.size; ++i)
      largest = std::max(largest, std::abs(analytic[static_cast<std::size_t>(t.offset + i)]));
    CHECK(largest > 0);
    const int probes = static_cast<int>(std::min<pretrain::index_t>(t.size, 6));
    for (int k = 0; k < probes; ++k) {
      const auto i = static_cast<std::size_t>(t.offset + (t.size <= 6 ? k : rng.integer(0, t.size - 1)));
      double& p = net.parameters()[i];
      const double saved = p;
      p = saved + h;
      const double up = net.forward(batch);
      p = saved - h;
      const double down = net.forward(batch);
      p = saved;
      const double numeric = (up - down) / (2 * h);
      INFO("element " << i - static_cast<std::size_t>(t.offset) << ": analytic " << analytic[i] << ", numeric "
                      << numeric);
      // Central differences in double: truncation O(h^2 f''') ~ 1e-10, rounding ~ eps·|L|/h ~ 1e-10. A wrong
      // backward term is off by O(|gradient|); a kink (ReLU, clip) within h of an entry is ~1e-5 likely.
      CHECK(std::abs(analytic[i] - numeric) <= 1e-7 + 1e-5 * std::abs(numeric));
    }
  }
}
