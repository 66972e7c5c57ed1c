#pragma once
/// \file
/// Newton–Schulz orthogonalization (REFERENCE §4, Muon; docs/pretraining.md "Muon"): a few matrix products that
/// map `G = U S Vᵀ` (thin SVD) to approximately its polar factor `U Vᵀ`, without an SVD. Muon applies it to the
/// momentum of every 2-D hidden weight.
///
/// \code
///   const Eigen::MatrixXf g = Eigen::MatrixXf::Random(128, 512);  // e.g. Muon's momentum of a 128x512 weight
///   const Eigen::MatrixXf o = qsafe::newton_schulz(g);             // Muon's 5 quintic steps
///   const Eigen::MatrixXf p = qsafe::newton_schulz(g, {.steps = 40, .coefficients = qsafe::newton_schulz_cubic});
/// \endcode
///
/// The iteration, on `X0 = G / (‖G‖_F + eps)` (transposed first when `G` has more rows than columns, so that
/// `A = X Xᵀ` is the smaller Gram matrix, and transposed back at the end):
///
///     A = X Xᵀ,   X ← a X + (b A + c A²) X
///
/// Each step maps every singular value `σ` of `X` to `p(σ) = aσ + bσ³ + cσ⁵` and keeps the singular vectors, so
/// the result is `U p⁵(S/‖G‖_F) Vᵀ` exactly in exact arithmetic. Two coefficient sets:
/// - `newton_schulz_quintic` = (3.4445, −4.7750, 2.0315), Keller Jordan's Muon (and OSP's): the slope
///   `p'(0) = 3.4445` inflates small singular values fast, at the price of not converging to 1: after 5 steps
///   every normalized `σ ≥ 2e-3` lies in [0.68, 1.21] (the scalar map's attracting band is [0.68, 1.14]; more
///   steps do not tighten it). Smaller `σ` are multiplied by at most 3.4445⁵ ≈ 487, so rank-deficient directions
///   stay 0. `‖OᵀO − I‖₂` is therefore up to ~0.54, not 0: Muon wants a fast "roughly orthogonal" update, not the
///   exact polar factor.
/// - `newton_schulz_cubic` = (1.5, −0.5, 0): the classic iteration, which converges quadratically to the polar
///   factor for `0 < σ ≤ 1` (after the normalization every `σ` is), slowly (×1.5 per step) while `σ` is small.
///
/// Contract:
/// - Any real Eigen dense expression in, a plain column-major matrix of its scalar type out, same shape.
///   Arithmetic in the scalar type with Eigen's matrix products (float: relative error per step ~1e-6·√n; the
///   orthogonality of the result is bounded by the band above, not by the rounding).
/// - Deterministic: Eigen's products give the same result for the same input and thread count; call it inside an
///   OpenMP region (as the pretraining example does) to keep them single-threaded and thread-count independent.
/// - Cost: `steps · (2 m²n + m³)` multiply-adds for `m = min(rows, cols)`, `n = max(rows, cols)`; memory: two
///   `m × m` and two `m × n` temporaries.
/// - Errors: an empty matrix, a non-finite entry, `steps < 0` or a non-finite or negative `eps` throw
///   `std::invalid_argument` naming the argument. The zero matrix gives the zero matrix (the `eps` guards it).

#include <Eigen/Core>
#include <cmath>
#include <stdexcept>
#include <string>

namespace qsafe {

/// The three coefficients `(a, b, c)` of one Newton–Schulz step `X ← aX + (bA + cA²)X`, `A = XXᵀ`.
struct newton_schulz_coefficients {
  double a = 0, b = 0, c = 0;
};

/// Muon's quintic coefficients (Keller Jordan; the OSP paper's code): fast, singular values to ~[0.68, 1.2].
inline constexpr newton_schulz_coefficients newton_schulz_quintic{3.4445, -4.7750, 2.0315};
/// The classic cubic iteration `X ← 1.5X − 0.5XXᵀX`: converges to the polar factor `UVᵀ`.
inline constexpr newton_schulz_coefficients newton_schulz_cubic{1.5, -0.5, 0.0};

struct newton_schulz_options {
  int steps = 5;                                                    ///< Muon's default
  newton_schulz_coefficients coefficients = newton_schulz_quintic;  ///< Muon's
  double eps = 1e-8;  ///< added to ‖G‖_F before dividing (REFERENCE §4)
};

/// Approximately the polar factor `UVᵀ` of `g` (see the file comment for how approximate).
template <class Derived>
Eigen::Matrix<typename Derived::Scalar, Eigen::Dynamic, Eigen::Dynamic> newton_schulz(
    const Eigen::MatrixBase<Derived>& g, const newton_schulz_options& options = {}) {
  using T = typename Derived::Scalar;
  using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
  static_assert(std::is_floating_point_v<T>, "qsafe::newton_schulz: real floating-point matrices only");
  auto fail = [](const char* argument, const std::string& what) {
    throw std::invalid_argument(std::string("qsafe::newton_schulz: argument '") + argument + "' " + what);
  };
  if (g.rows() == 0 || g.cols() == 0) fail("g", "is empty");
  if (!g.allFinite()) fail("g", "has a non-finite entry");
  if (options.steps < 0) fail("options", "steps must be >= 0, got " + std::to_string(options.steps));
  if (!std::isfinite(options.eps) || options.eps < 0) fail("options", "eps must be finite and >= 0");

  const bool transposed = g.rows() > g.cols();
  matrix x = transposed ? matrix(g.transpose()) : matrix(g);
  x /= static_cast<T>(x.norm() + options.eps);
  const T a = static_cast<T>(options.coefficients.a), b = static_cast<T>(options.coefficients.b),
          c = static_cast<T>(options.coefficients.c);
  matrix gram(x.rows(), x.rows()), poly(x.rows(), x.rows()), next(x.rows(), x.cols());
  for (int s = 0; s < options.steps; ++s) {
    gram.noalias() = x * x.transpose();
    poly.noalias() = b * gram;
    if (c != T(0)) poly.noalias() += c * (gram * gram);
    next.noalias() = poly * x;
    x = a * x + next;
  }
  if (transposed) return x.transpose();
  return x;
}

}  // namespace qsafe
