#pragma once
// The tensor math of the reference models, on the host: the small interface a CUDA backend implements later with
// the same signatures (raw pointers to row-major buffers, sizes, no allocation). Each forward sits next to its
// backward, with shapes in comments. Backward functions ACCUMULATE (+=) into parameter gradients and into `dinp`
// unless a comment says "writes". Matrix products go through Eigen's GEMM on fixed blocks of 64 output rows spread
// over OpenMP threads; attention's softmax goes through qsafe's public API. Every output element is computed by
// one thread in an order that does not depend on the thread count, so training is bit-identical for any number
// of threads. (Eigen's own GEMM threading is not: its results varied between runs with 2 threads.)
#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <span>
#include <variant>
#include <vector>

#include "config.hpp"
#include "qsafe/softmax.hpp"

namespace pretrain {

using qsafe::index_t;

template <class T>
using row_matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using matrix_map = Eigen::Map<row_matrix<T>, 0, Eigen::OuterStride<>>;
template <class T>
using const_matrix_map = Eigen::Map<const row_matrix<T>, 0, Eigen::OuterStride<>>;

template <class T>
matrix_map<T> as_matrix(T* p, index_t rows, index_t cols, index_t stride = -1) {
  return matrix_map<T>(p, rows, cols, Eigen::OuterStride<>(stride < 0 ? cols : stride));
}
template <class T>
const_matrix_map<T> as_matrix(const T* p, index_t rows, index_t cols, index_t stride = -1) {
  return const_matrix_map<T>(p, rows, cols, Eigen::OuterStride<>(stride < 0 ? cols : stride));
}

/// Which keys each attention row sees: causal (OPT) and/or per-sequence valid lengths (padding, BERT).
struct attention_mask {
  bool causal = false;
  std::span<const std::int32_t> lengths;  // one per sequence; empty: all T keys valid
};

template <class T>
struct host_ops {
  // ---------------------------------------------------------------------------------------------------------------
  // embeddings: out (N=B*T, C) = wte[tokens] + wpe[position]
  static void embedding_forward(T* out, const std::int32_t* tokens, const T* wte, const T* wpe, index_t B, index_t Tn,
                                index_t C) {
    for (index_t b = 0; b < B; ++b)
      for (index_t t = 0; t < Tn; ++t) {
        T* o = out + (b * Tn + t) * C;
        const T* e = wte + tokens[b * Tn + t] * C;
        const T* p = wpe + t * C;
        for (index_t c = 0; c < C; ++c) o[c] = e[c] + p[c];
      }
  }
  static void embedding_backward(T* dwte, T* dwpe, const T* dout, const std::int32_t* tokens, index_t B, index_t Tn,
                                 index_t C) {
    for (index_t b = 0; b < B; ++b)
      for (index_t t = 0; t < Tn; ++t) {
        const T* d = dout + (b * Tn + t) * C;
        T* de = dwte + tokens[b * Tn + t] * C;
        T* dp = dwpe + t * C;
        for (index_t c = 0; c < C; ++c) {
          de[c] += d[c];
          dp[c] += d[c];
        }
      }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Runs f(first, count) over [0, rows) in blocks of `block` rows, blocks spread over OpenMP threads. Inside the
  // parallel region Eigen's GEMM stays single-threaded (it checks omp_get_num_threads()).
  template <class F>
  static void for_blocks(index_t rows, F&& f, index_t block = 64) {
    const index_t blocks = (rows + block - 1) / block;
#pragma omp parallel for schedule(static)
    for (index_t i = 0; i < blocks; ++i) f(i * block, std::min(block, rows - i * block));
  }

  // linear: out (N, OC) = inp (N, C) · w (OC, C)ᵀ + b (OC); b may be null
  static void matmul_forward(T* out, const T* inp, const T* w, const T* b, index_t N, index_t C, index_t OC) {
    for_blocks(N, [&](index_t r, index_t n) {
      auto o = as_matrix(out + r * OC, n, OC);
      o.noalias() = as_matrix(inp + r * C, n, C) * as_matrix(w, OC, C).transpose();
      if (b != nullptr) o.rowwise() += Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(b, OC);
    });
  }
  // dinp (N, C) += dout · w; dw (OC, C) += doutᵀ · inp; db (OC) += Σ_rows dout. dinp / db may be null.
  static void matmul_backward(T* dinp, T* dw, T* db, const T* dout, const T* inp, const T* w, index_t N, index_t C,
                              index_t OC) {
    if (dinp != nullptr) {
      for_blocks(N, [&](index_t r, index_t n) {
        as_matrix(dinp + r * C, n, C).noalias() += as_matrix(dout + r * OC, n, OC) * as_matrix(w, OC, C);
      });
    }
    for_blocks(OC, [&](index_t o, index_t n) {
      const auto d = as_matrix(dout + o, N, n, OC);  // columns o .. o+n of dout
      as_matrix(dw + o * C, n, C).noalias() += d.transpose() * as_matrix(inp, N, C);
      // Not d.colwise().sum(): Eigen sums the columns it reaches by packets in another order than those before db's
      // first aligned address, so the gradient would depend on where the allocator put it (runs must repeat).
      if (db != nullptr) {
        std::vector<T> sum(static_cast<std::size_t>(n), T(0));
        for (index_t i = 0; i < N; ++i)
          for (index_t c = 0; c < n; ++c) sum[static_cast<std::size_t>(c)] += d(i, c);
        for (index_t c = 0; c < n; ++c) db[o + c] += sum[static_cast<std::size_t>(c)];
      }
    });
  }

  // ---------------------------------------------------------------------------------------------------------------
  // layer norm over C: out (N, C) = (inp - mean) · rstd · w + b; saves mean (N), rstd (N)
  static void layernorm_forward(T* out, T* mean, T* rstd, const T* inp, const T* w, const T* b, index_t N, index_t C,
                                double eps) {
#pragma omp parallel for schedule(static)
    for (index_t i = 0; i < N; ++i) {
      const T* x = inp + i * C;
      T m = 0;
      for (index_t c = 0; c < C; ++c) m += x[c];
      m /= T(C);
      T v = 0;
      for (index_t c = 0; c < C; ++c) v += (x[c] - m) * (x[c] - m);
      v /= T(C);
      const T s = T(1) / std::sqrt(v + T(eps));
      T* o = out + i * C;
      for (index_t c = 0; c < C; ++c) o[c] = (x[c] - m) * s * w[c] + b[c];
      mean[i] = m;
      rstd[i] = s;
    }
  }
  static void layernorm_backward(T* dinp, T* dw, T* db, const T* dout, const T* inp, const T* w, const T* mean,
                                 const T* rstd, index_t N, index_t C) {
    for (index_t i = 0; i < N; ++i) {
      const T* d = dout + i * C;
      const T* x = inp + i * C;
      T* dx = dinp + i * C;
      const T m = mean[i], s = rstd[i];
      T dnorm_mean = 0, dnorm_norm_mean = 0;
      for (index_t c = 0; c < C; ++c) {
        const T n = (x[c] - m) * s;
        const T dn = w[c] * d[c];
        dnorm_mean += dn;
        dnorm_norm_mean += dn * n;
      }
      dnorm_mean /= T(C);
      dnorm_norm_mean /= T(C);
      for (index_t c = 0; c < C; ++c) {
        const T n = (x[c] - m) * s;
        const T dn = w[c] * d[c];
        db[c] += d[c];
        dw[c] += n * d[c];
        dx[c] += (dn - dnorm_mean - n * dnorm_norm_mean) * s;
      }
    }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // RMSNorm over C: out (N, C) = inp · rstd · g, rstd = 1/√(mean(inp²) + eps); saves rstd (N). The gain g is per
  // channel (C values) or, for OSP's single-scale RMSNorm (REFERENCE §4), one scalar for all channels.
  static void rmsnorm_forward(T* out, T* rstd, const T* inp, const T* g, index_t N, index_t C, double eps,
                              bool single_scale) {
#pragma omp parallel for schedule(static)
    for (index_t i = 0; i < N; ++i) {
      const T* x = inp + i * C;
      T ms = 0;
      for (index_t c = 0; c < C; ++c) ms += x[c] * x[c];
      const T s = T(1) / std::sqrt(ms / T(C) + T(eps));
      T* o = out + i * C;
      for (index_t c = 0; c < C; ++c) o[c] = x[c] * s * g[single_scale ? 0 : c];
      rstd[i] = s;
    }
  }
  // n = x·s: dx += s·(dn − n·mean(dn·n)) with dn = g ⊙ dout; dg += Σ n ⊙ dout (summed over channels too when
  // single_scale).
  static void rmsnorm_backward(T* dinp, T* dg, const T* dout, const T* inp, const T* g, const T* rstd, index_t N,
                               index_t C, bool single_scale) {
    for (index_t i = 0; i < N; ++i) {
      const T* d = dout + i * C;
      const T* x = inp + i * C;
      T* dx = dinp + i * C;
      const T s = rstd[i];
      T dn_n_mean = 0;
      for (index_t c = 0; c < C; ++c) dn_n_mean += g[single_scale ? 0 : c] * d[c] * x[c] * s;
      dn_n_mean /= T(C);
      T dg_row = 0;
      for (index_t c = 0; c < C; ++c) {
        const T n = x[c] * s;
        dx[c] += (g[single_scale ? 0 : c] * d[c] - n * dn_n_mean) * s;
        if (single_scale) {
          dg_row += n * d[c];
        } else {
          dg[c] += n * d[c];
        }
      }
      if (single_scale) dg[0] += dg_row;
    }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // token lookup alone (for the embedding projection, which sits between it and the position add):
  // out (N, C) = wte[tokens]; backward dwte[tokens] += dout
  static void token_lookup_forward(T* out, const std::int32_t* tokens, const T* wte, index_t N, index_t C) {
    for (index_t i = 0; i < N; ++i) std::copy_n(wte + tokens[i] * C, C, out + i * C);
  }
  static void token_lookup_backward(T* dwte, const T* dout, const std::int32_t* tokens, index_t N, index_t C) {
    for (index_t i = 0; i < N; ++i) {
      T* de = dwte + tokens[i] * C;
      for (index_t c = 0; c < C; ++c) de[c] += dout[i * C + c];
    }
  }
  // out (B, T, C) += wpe[t]; backward dwpe[t] += dout
  static void position_add_forward(T* out, const T* wpe, index_t B, index_t Tn, index_t C) {
    for (index_t b = 0; b < B; ++b)
      for (index_t t = 0; t < Tn; ++t)
        for (index_t c = 0; c < C; ++c) out[(b * Tn + t) * C + c] += wpe[t * C + c];
  }
  static void position_add_backward(T* dwpe, const T* dout, index_t B, index_t Tn, index_t C) {
    for (index_t b = 0; b < B; ++b)
      for (index_t t = 0; t < Tn; ++t)
        for (index_t c = 0; c < C; ++c) dwpe[t * C + c] += dout[(b * Tn + t) * C + c];
  }

  // ---------------------------------------------------------------------------------------------------------------
  // element-wise activations: out (n) = f(inp); backward ACCUMULATES dinp += f'(inp) · dout
  static void gelu_forward(T* out, const T* inp, index_t n) {  // exact GELU (erf), as BERT
#pragma omp parallel for schedule(static)
    for (index_t i = 0; i < n; ++i) out[i] = T(0.5) * inp[i] * (T(1) + std::erf(inp[i] * T(M_SQRT1_2)));
  }
  static void gelu_backward(T* dinp, const T* inp, const T* dout, index_t n) {
    const T inv_sqrt_2pi = T(0.5 * M_2_SQRTPI * M_SQRT1_2);
#pragma omp parallel for schedule(static)
    for (index_t i = 0; i < n; ++i) {
      const T x = inp[i];
      const T cdf = T(0.5) * (T(1) + std::erf(x * T(M_SQRT1_2)));
      dinp[i] += (cdf + x * inv_sqrt_2pi * std::exp(T(-0.5) * x * x)) * dout[i];
    }
  }
  static void relu_forward(T* out, const T* inp, index_t n) {
    for (index_t i = 0; i < n; ++i) out[i] = inp[i] > T(0) ? inp[i] : T(0);
  }
  static void relu_backward(T* dinp, const T* inp, const T* dout, index_t n) {
    for (index_t i = 0; i < n; ++i) dinp[i] += inp[i] > T(0) ? dout[i] : T(0);
  }
  // out (n) = a + b
  static void residual_forward(T* out, const T* a, const T* b, index_t n) {
    for (index_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
  }
  // da += d, db += d
  static void residual_backward(T* da, T* db, const T* d, index_t n) {
    for (index_t i = 0; i < n; ++i) {
      da[i] += d[i];
      db[i] += d[i];
    }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // attention scores: qkv (B, T, 3C) holds q | k | v, head h at columns h*hs.
  // scores (B, NH, T, T) = q_h k_hᵀ / sqrt(hs) (writes, every entry; masking is the softmax's lengths)
  static void attention_scores_forward(T* scores, const T* qkv, index_t B, index_t Tn, index_t C, index_t NH) {
    const index_t hs = C / NH;
    const T scale = T(1) / std::sqrt(T(hs));
#pragma omp parallel for schedule(static)
    for (index_t bh = 0; bh < B * NH; ++bh) {
      const index_t b = bh / NH, h = bh % NH;
      const T* base = qkv + b * Tn * 3 * C + h * hs;
      as_matrix(scores + bh * Tn * Tn, Tn, Tn).noalias() =
          scale * (as_matrix(base, Tn, hs, 3 * C) * as_matrix(base + C, Tn, hs, 3 * C).transpose());
    }
  }
  // dqkv's q and k parts += from dscores (B, NH, T, T)
  static void attention_scores_backward(T* dqkv, const T* dscores, const T* qkv, index_t B, index_t Tn, index_t C,
                                        index_t NH) {
    const index_t hs = C / NH;
    const T scale = T(1) / std::sqrt(T(hs));
#pragma omp parallel for schedule(static)
    for (index_t bh = 0; bh < B * NH; ++bh) {
      const index_t b = bh / NH, h = bh % NH;
      const index_t off = b * Tn * 3 * C + h * hs;
      const auto ds = as_matrix(dscores + bh * Tn * Tn, Tn, Tn);
      as_matrix(dqkv + off, Tn, hs, 3 * C).noalias() += scale * (ds * as_matrix(qkv + off + C, Tn, hs, 3 * C));
      as_matrix(dqkv + off + C, Tn, hs, 3 * C).noalias() +=
          scale * (ds.transpose() * as_matrix(qkv + off, Tn, hs, 3 * C));
    }
  }

  // softmax over the rows of scores (B·NH·T, T) through qsafe; y is the variant's output, p the unclipped softmax
  // the exact backward needs (REFERENCE §1).
  template <class F>
  static void with_lengths(const attention_mask& mask, index_t B, index_t Tn, index_t NH, F&& f) {
    if (mask.lengths.empty()) {
      if (mask.causal) {
        f(qsafe::causal_rows{Tn, 0});
      } else {
        f(qsafe::full_rows{});
      }
    } else if (mask.causal) {
      f(qsafe::causal_padded_rows{Tn, 0, mask.lengths, NH * Tn});
    } else {
      f(qsafe::padded_rows{mask.lengths, NH * Tn});
    }
    (void)B;
  }
  static void softmax_forward(T* y, T* p, const T* scores, const any_variant& variant, const attention_mask& mask,
                              index_t B, index_t Tn, index_t NH) {
    const qsafe::matrix_view<const T> x(scores, B * NH * Tn, Tn);
    with_lengths(mask, B, Tn, NH, [&](const auto& lengths) {
      std::visit(
          [&](const auto& v) {
            qsafe::softmax_forward(qsafe::simd_parallel, v, lengths, x, qsafe::matrix_view<T>(y, B * NH * Tn, Tn),
                                   qsafe::matrix_view<T>(p, B * NH * Tn, Tn));
          },
          variant);
    });
  }
  // dscores (writes) from p and dy
  static void softmax_backward(T* dscores, const T* p, const T* dy, const any_variant& variant,
                               const attention_mask& mask, index_t B, index_t Tn, index_t NH) {
    with_lengths(mask, B, Tn, NH, [&](const auto& lengths) {
      std::visit(
          [&](const auto& v) {
            qsafe::softmax_backward(qsafe::simd_parallel, v, lengths, qsafe::matrix_view<const T>(p, B * NH * Tn, Tn),
                                    qsafe::matrix_view<const T>(dy, B * NH * Tn, Tn),
                                    qsafe::matrix_view<T>(dscores, B * NH * Tn, Tn));
          },
          variant);
    });
  }

  // context: ctx (B, T, C), head h at columns h*hs, = y_h (T, T) · v_h (T, hs) (writes)
  static void attention_context_forward(T* ctx, const T* y, const T* qkv, index_t B, index_t Tn, index_t C,
                                        index_t NH) {
    const index_t hs = C / NH;
#pragma omp parallel for schedule(static)
    for (index_t bh = 0; bh < B * NH; ++bh) {
      const index_t b = bh / NH, h = bh % NH;
      as_matrix(ctx + b * Tn * C + h * hs, Tn, hs, C).noalias() =
          as_matrix(y + bh * Tn * Tn, Tn, Tn) * as_matrix(qkv + b * Tn * 3 * C + 2 * C + h * hs, Tn, hs, 3 * C);
    }
  }
  // dy (B, NH, T, T) (writes) = dctx_h · v_hᵀ; dqkv's v part += y_hᵀ · dctx_h
  static void attention_context_backward(T* dy, T* dqkv, const T* dctx, const T* y, const T* qkv, index_t B, index_t Tn,
                                         index_t C, index_t NH) {
    const index_t hs = C / NH;
#pragma omp parallel for schedule(static)
    for (index_t bh = 0; bh < B * NH; ++bh) {
      const index_t b = bh / NH, h = bh % NH;
      const auto d = as_matrix(dctx + b * Tn * C + h * hs, Tn, hs, C);
      const index_t voff = b * Tn * 3 * C + 2 * C + h * hs;
      as_matrix(dy + bh * Tn * Tn, Tn, Tn).noalias() = d * as_matrix(qkv + voff, Tn, hs, 3 * C).transpose();
      as_matrix(dqkv + voff, Tn, hs, 3 * C).noalias() += as_matrix(y + bh * Tn * Tn, Tn, Tn).transpose() * d;
    }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // gated attention (REFERENCE §4): per token and head, from head h's slice x_h (hs) of the block input x (N, C):
  //   G = 0:  logit = w_h · x_h + b_h                       w (NH, hs), b (NH)
  //   G > 0:  a = relu(W1_h x_h + b1_h) (G); logit = w2_h · a + b2_h   W1 (NH, G, hs), b1 (NH, G), w2 (NH, G), b2 (NH)
  // gate (N, NH) = sigmoid(logit); hidden (N, NH, G) saves W1 x + b1 (pre-ReLU). out (N, C) = gate ⊙ ctx per head.
  static void gate_forward(T* out, T* gate, T* hidden, const T* ctx, const T* x, const T* w1, const T* b1, const T* w2,
                           const T* b2, index_t N, index_t C, index_t NH, index_t G) {
    const index_t hs = C / NH;
    for (index_t i = 0; i < N; ++i)
      for (index_t h = 0; h < NH; ++h) {
        const T* xh = x + i * C + h * hs;
        T logit;
        if (G == 0) {
          logit = b1[h];
          for (index_t c = 0; c < hs; ++c) logit += w1[h * hs + c] * xh[c];
        } else {
          logit = b2[h];
          T* a = hidden + (i * NH + h) * G;
          for (index_t g = 0; g < G; ++g) {
            T s = b1[h * G + g];
            const T* wr = w1 + (h * G + g) * hs;
            for (index_t c = 0; c < hs; ++c) s += wr[c] * xh[c];
            a[g] = s;
            logit += w2[h * G + g] * (s > T(0) ? s : T(0));
          }
        }
        const T gt = T(1) / (T(1) + std::exp(-logit));
        gate[i * NH + h] = gt;
        for (index_t c = 0; c < hs; ++c) out[i * C + h * hs + c] = gt * ctx[i * C + h * hs + c];
      }
  }
  // dctx += gate ⊙ dout; dx += through the gate network; parameter gradients +=.
  static void gate_backward(T* dctx, T* dx, T* dw1, T* db1, T* dw2, T* db2, const T* dout, const T* gate,
                            const T* hidden, const T* ctx, const T* x, const T* w1, const T* w2, index_t N, index_t C,
                            index_t NH, index_t G) {
    const index_t hs = C / NH;
    for (index_t i = 0; i < N; ++i)
      for (index_t h = 0; h < NH; ++h) {
        const index_t o = i * C + h * hs;
        const T gt = gate[i * NH + h];
        T dgate = 0;
        for (index_t c = 0; c < hs; ++c) {
          dgate += dout[o + c] * ctx[o + c];
          dctx[o + c] += gt * dout[o + c];
        }
        const T dlogit = dgate * gt * (T(1) - gt);
        const T* xh = x + o;
        T* dxh = dx + o;
        if (G == 0) {
          db1[h] += dlogit;
          for (index_t c = 0; c < hs; ++c) {
            dw1[h * hs + c] += dlogit * xh[c];
            dxh[c] += dlogit * w1[h * hs + c];
          }
        } else {
          db2[h] += dlogit;
          const T* a = hidden + (i * NH + h) * G;
          for (index_t g = 0; g < G; ++g) {
            dw2[h * G + g] += dlogit * (a[g] > T(0) ? a[g] : T(0));
            if (!(a[g] > T(0))) continue;
            const T ds = dlogit * w2[h * G + g];
            db1[h * G + g] += ds;
            const T* wr = w1 + (h * G + g) * hs;
            T* dwr = dw1 + (h * G + g) * hs;
            for (index_t c = 0; c < hs; ++c) {
              dwr[c] += ds * xh[c];
              dxh[c] += ds * wr[c];
            }
          }
        }
      }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // softmax cross-entropy over logits (M, V) with targets (M): writes probs (M, V) in place of logits and returns
  // Σ -log p[target]. The backward writes dlogits (M, V) = (probs - onehot) · scale, in place of probs.
  static double crossentropy_forward(T* logits, const std::int32_t* targets, index_t M, index_t V) {
    std::vector<double> losses(static_cast<std::size_t>(M));
#pragma omp parallel for schedule(static)
    for (index_t i = 0; i < M; ++i) {
      T* z = logits + i * V;
      T m = z[0];
      for (index_t v = 1; v < V; ++v) m = std::max(m, z[v]);
      const T shifted_target = z[targets[i]] - m;
      T s = 0;
      for (index_t v = 0; v < V; ++v) s += (z[v] = std::exp(z[v] - m));
      for (index_t v = 0; v < V; ++v) z[v] /= s;
      // -log p without underflow
      losses[static_cast<std::size_t>(i)] = std::log(static_cast<double>(s)) - static_cast<double>(shifted_target);
    }
    double loss = 0;
    for (double l : losses) loss += l;  // fixed order
    return loss;
  }
  static void crossentropy_backward(T* probs, const std::int32_t* targets, index_t M, index_t V, T scale) {
#pragma omp parallel for schedule(static)
    for (index_t i = 0; i < M; ++i) {
      T* z = probs + i * V;
      z[targets[i]] -= T(1);
      for (index_t v = 0; v < V; ++v) z[v] *= scale;
    }
  }
};

}  // namespace pretrain
