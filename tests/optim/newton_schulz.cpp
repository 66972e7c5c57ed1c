// qsafe::newton_schulz against the SVD (Eigen's JacobiSVD in double): the iteration is exactly
// U p^k(S/‖G‖_F) Vᵀ; Muon's quintic lands the singular values in its band (not at 1), the classic cubic converges
// to the polar factor U Vᵀ; square, wide, tall, ill-conditioned and degenerate inputs; float against double.

#include <Eigen/Dense>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>

#include "qsafe/newton_schulz.hpp"
#include "support/random.hpp"

namespace {

using Eigen::MatrixXd;
using Eigen::VectorXd;

MatrixXd gaussian(qsafe::test::rng& rng, Eigen::Index rows, Eigen::Index cols) {
  MatrixXd m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = rng.normal();
  return m;
}

MatrixXd random_orthonormal_columns(qsafe::test::rng& rng, Eigen::Index rows, Eigen::Index cols) {
  Eigen::HouseholderQR<MatrixXd> qr(gaussian(rng, rows, rows));
  return MatrixXd(qr.householderQ()).leftCols(cols);
}

// G = U diag(s) Vᵀ with random orthonormal U, V: a chosen spectrum.
MatrixXd with_spectrum(qsafe::test::rng& rng, Eigen::Index rows, Eigen::Index cols, const VectorXd& s) {
  const Eigen::Index k = s.size();
  return random_orthonormal_columns(rng, rows, k) * s.asDiagonal() *
         random_orthonormal_columns(rng, cols, k).transpose();
}

// The scalar map each step applies to every singular value, in long double.
long double iterate(long double x, qsafe::newton_schulz_coefficients c, int steps) {
  for (int i = 0; i < steps; ++i) {
    const long double x2 = x * x;
    x = static_cast<long double>(c.a) * x + static_cast<long double>(c.b) * x2 * x +
        static_cast<long double>(c.c) * x2 * x2 * x;
  }
  return x;
}

struct spectrum_check {
  double max_deviation_from_prediction = 0;  // ‖O − U p^k(S) Vᵀ‖_max / max|p^k|
  VectorXd singular_values;                  // of O, descending
  VectorXd normalized;                       // σ(G)/(‖G‖_F + eps), descending
  double orthogonality = 0;                  // ‖OᵀO − I‖₂ on the row space (min dim), = max |σ(O)² − 1|
  double polar_distance = 0;                 // ‖O − UVᵀ‖₂ = max |σ(O) − 1|
};

spectrum_check check(const MatrixXd& g, const MatrixXd& o, const qsafe::newton_schulz_options& opt) {
  Eigen::JacobiSVD<MatrixXd> svd(g, Eigen::ComputeThinU | Eigen::ComputeThinV);
  spectrum_check r;
  r.normalized = svd.singularValues() / (g.norm() + opt.eps);
  VectorXd predicted(r.normalized.size());
  for (Eigen::Index i = 0; i < predicted.size(); ++i) {
    predicted[i] = static_cast<double>(iterate(r.normalized[i], opt.coefficients, opt.steps));
  }
  const MatrixXd expected = svd.matrixU() * predicted.asDiagonal() * svd.matrixV().transpose();
  r.max_deviation_from_prediction = (o - expected).cwiseAbs().maxCoeff() / predicted.cwiseAbs().maxCoeff();
  r.singular_values = Eigen::JacobiSVD<MatrixXd>(o).singularValues();
  r.orthogonality = (r.singular_values.array().square() - 1).abs().maxCoeff();
  r.polar_distance = (r.singular_values.array() - 1).abs().maxCoeff();
  return r;
}

}  // namespace

TEST_CASE("newton_schulz is U p^k(S/|G|_F) V^T: the SVD's vectors and the scalar map on the singular values") {
  QSAFE_TEST_RNG(rng);
  struct shape {
    Eigen::Index rows, cols;
  };
  const shape s =
      GENERATE(shape{1, 1}, shape{1, 17}, shape{17, 1}, shape{32, 32}, shape{24, 80}, shape{80, 24}, shape{127, 64});
  const qsafe::newton_schulz_options opt =
      GENERATE(qsafe::newton_schulz_options{}, qsafe::newton_schulz_options{2, qsafe::newton_schulz_quintic},
               qsafe::newton_schulz_options{12, qsafe::newton_schulz_cubic});
  INFO(s.rows << "x" << s.cols << ", " << opt.steps << " steps, a = " << opt.coefficients.a);
  const MatrixXd g = gaussian(rng, s.rows, s.cols) * rng.uniform(0.01, 100);
  const MatrixXd o = qsafe::newton_schulz(g, opt);
  REQUIRE(o.rows() == g.rows());
  REQUIRE(o.cols() == g.cols());
  const spectrum_check r = check(g, o, opt);
  INFO("max deviation " << r.max_deviation_from_prediction);
  // Double throughout: each step's products err by ~n·eps ~ 1e-14 relative and the map's slope is at most 3.4445,
  // so 12 steps stay below ~1e-9; the SVD's own error is ~1e-15. A wrong coefficient or a missed transpose is O(1).
  CHECK(r.max_deviation_from_prediction < 1e-9);
}

TEST_CASE("Muon's 5 quintic steps put every singular value of a random matrix in [0.68, 1.21], not at 1") {
  QSAFE_TEST_RNG(rng);
  struct shape {
    Eigen::Index rows, cols;
  };
  const shape s = GENERATE(shape{64, 64}, shape{48, 128}, shape{128, 48}, shape{128, 512}, shape{512, 128});
  const MatrixXd g = gaussian(rng, s.rows, s.cols);
  const MatrixXd o = qsafe::newton_schulz(g);
  const spectrum_check r = check(g, o, {});
  std::printf(
      "newton_schulz quintic x5, gaussian %ldx%ld: sigma(O) in [%.4f, %.4f], |O^T O - I|_2 = %.4f, "
      "|O - UV^T|_2 = %.4f (smallest sigma(G)/|G|_F = %.2e)\n",
      static_cast<long>(s.rows), static_cast<long>(s.cols), r.singular_values.minCoeff(), r.singular_values.maxCoeff(),
      r.orthogonality, r.polar_distance, r.normalized.minCoeff());
  INFO("sigma(O) in [" << r.singular_values.minCoeff() << ", " << r.singular_values.maxCoeff() << "]");
  // A square Gaussian's smallest singular value is ~1/n of the largest (~1e-4 of |G|_F at 64x64), below the 2e-3
  // that 5 steps lift into the band; the rectangular ones are well conditioned (>= 0.05 |G|_F).
  if (s.rows != s.cols) {
    // The scalar map's 5-step image of [2e-3, 1] is [0.6818, 1.2024] (computed on a grid of 2e5 points).
    CHECK(r.singular_values.minCoeff() > 0.68);
    CHECK(r.singular_values.maxCoeff() < 1.21);
    CHECK(r.orthogonality < 0.54);  // max(1.21² − 1, 1 − 0.68²)
  } else {
    CHECK(r.singular_values.maxCoeff() < 1.21);
    for (Eigen::Index i = 0; i < r.normalized.size(); ++i) {
      if (r.normalized[i] >= 2e-3) CHECK(r.singular_values[i] > 0.68);
    }
  }
  // ... and not the polar factor: the quintic trades exactness for speed (about 0.2-0.3 away in the 2-norm).
  CHECK(r.polar_distance > 0.1);
}

TEST_CASE("an ill-conditioned matrix: normalized singular values >= 2e-3 reach the band, smaller ones grow <= 487x") {
  QSAFE_TEST_RNG(rng);
  const Eigen::Index rows = GENERATE(40, 96), cols = 64, k = std::min<Eigen::Index>(rows, cols);
  VectorXd s(k);
  for (Eigen::Index i = 0; i < k; ++i)
    s[i] = std::pow(10.0, -7.0 * static_cast<double>(i) / static_cast<double>(k - 1));
  const MatrixXd g = with_spectrum(rng, rows, cols, s) * 3.0;
  const MatrixXd o = qsafe::newton_schulz(g);
  const spectrum_check r = check(g, o, {});
  CHECK(r.max_deviation_from_prediction < 1e-9);
  int in_band = 0, small = 0;
  for (Eigen::Index i = 0; i < k; ++i) {
    const double x = r.normalized[i], y = r.singular_values[i];
    INFO("sigma(G)/|G|_F = " << x << " -> sigma(O) = " << y);
    if (x >= 2e-3) {
      CHECK(y > 0.68);
      CHECK(y < 1.21);
      ++in_band;
    } else {
      // p(x) <= 3.4445 x for x in [0, 1] (b < 0 dominates c·x²), so 5 steps multiply by at most 3.4445⁵ ≈ 487;
      // the 1e-12 absolute slack is the double rounding of the products at |O| ~ 1.
      CHECK(y <= 487.0 * x + 1e-12);
      CHECK(y >= x * (1 - 1e-6));  // and never shrink a small one
      ++small;
    }
  }
  CHECK(in_band > 10);
  CHECK(small > 10);
}

TEST_CASE("the classic cubic iteration converges to the polar factor; more quintic steps do not") {
  QSAFE_TEST_RNG(rng);
  const Eigen::Index rows = GENERATE(32, 80), cols = 48;
  const MatrixXd g = gaussian(rng, rows, cols);
  Eigen::JacobiSVD<MatrixXd> svd(g, Eigen::ComputeThinU | Eigen::ComputeThinV);
  const MatrixXd polar = svd.matrixU() * svd.matrixV().transpose();
  auto distance = [&](const qsafe::newton_schulz_options& o) {
    return (qsafe::newton_schulz(g, o) - polar).lpNorm<Eigen::Infinity>();
  };
  const double cubic10 = distance({10, qsafe::newton_schulz_cubic}),
               cubic40 = distance({40, qsafe::newton_schulz_cubic});
  const double quintic5 = distance({}), quintic40 = distance({40, qsafe::newton_schulz_quintic});
  std::printf(
      "newton_schulz vs polar factor, %ldx%ld: cubic 10 steps %.2e, 40 steps %.2e; quintic 5 steps %.2e, "
      "40 steps %.2e (max entry)\n",
      static_cast<long>(rows), static_cast<long>(cols), cubic10, cubic40, quintic5, quintic40);
  // These Gaussians have sigma_min/|G|_F >= 0.03: ~9 cubic steps at x1.5 bring it near 1, then quadratic
  // convergence; 40 steps reach rounding (~1e-15 per entry, 1e-12 allows n-fold accumulation).
  CHECK(cubic40 < 1e-12);
  CHECK(cubic40 < cubic10);
  // The quintic oscillates inside its band [0.68, 1.14] forever: entries stay ~1e-2 away.
  CHECK(quintic40 > 1e-3);
  CHECK(quintic5 > 1e-3);
}

TEST_CASE("newton_schulz in float follows the double result to ~1e-5") {
  QSAFE_TEST_RNG(rng);
  const MatrixXd g = gaussian(rng, 96, 384);
  const MatrixXd od = qsafe::newton_schulz(g);
  const Eigen::MatrixXf of = qsafe::newton_schulz(Eigen::MatrixXf(g.cast<float>()));
  const double err = (of.cast<double>() - od).cwiseAbs().maxCoeff();
  INFO("max |float - double| = " << err);
  // Entries are O(1/√96); float products over 384 terms err ~1e-6 relative per step and 5 steps with slope <= 3.4
  // amplify to ~1e-5 at most. A float path that dropped a step or a coefficient would be O(0.1) off.
  CHECK(err < 5e-5);
}

TEST_CASE("newton_schulz edge cases: the zero matrix, zero steps, and bad arguments") {
  const MatrixXd zero = MatrixXd::Zero(3, 5);
  CHECK(qsafe::newton_schulz(zero).isZero(0.0));
  QSAFE_TEST_RNG(rng);
  const MatrixXd g = gaussian(rng, 4, 6);
  // zero steps: just the normalization
  CHECK((qsafe::newton_schulz(g, {0}) - g / (g.norm() + 1e-8)).cwiseAbs().maxCoeff() < 1e-15);
  MatrixXd bad = g;
  bad(1, 2) = std::nan("");
  CHECK_THROWS_WITH(qsafe::newton_schulz(bad), Catch::Contains("'g'") && Catch::Contains("non-finite"));
  bad(1, 2) = INFINITY;
  CHECK_THROWS_WITH(qsafe::newton_schulz(bad), Catch::Contains("'g'"));
  CHECK_THROWS_WITH(qsafe::newton_schulz(MatrixXd(0, 3)), Catch::Contains("'g'") && Catch::Contains("empty"));
  CHECK_THROWS_WITH(qsafe::newton_schulz(g, {-1}), Catch::Contains("'options'") && Catch::Contains("steps"));
  qsafe::newton_schulz_options o;
  o.eps = -1;
  CHECK_THROWS_WITH(qsafe::newton_schulz(g, o), Catch::Contains("eps"));
}

TEST_CASE("the header's example compiles and does what it says") {
  // include/qsafe/newton_schulz.hpp's \code block, verbatim
  const Eigen::MatrixXf g = Eigen::MatrixXf::Random(128, 512);  // e.g. Muon's momentum of a 128x512 weight
  const Eigen::MatrixXf o = qsafe::newton_schulz(g);            // Muon's 5 quintic steps
  const Eigen::MatrixXf p = qsafe::newton_schulz(g, {.steps = 40, .coefficients = qsafe::newton_schulz_cubic});
  const Eigen::VectorXf so = Eigen::JacobiSVD<Eigen::MatrixXf>(o).singularValues();
  const Eigen::VectorXf sp = Eigen::JacobiSVD<Eigen::MatrixXf>(p).singularValues();
  // quintic: Muon's band (a uniform 128x512 matrix is well conditioned); cubic: the polar factor to float rounding
  CHECK(so.minCoeff() > 0.68f);
  CHECK(so.maxCoeff() < 1.21f);
  CHECK((sp.array() - 1).abs().maxCoeff() < 1e-4f);
}
