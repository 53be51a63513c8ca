// Fused BatchNorm + activation for CPU (lightseg.networks.fused).
//
// The papers' blocks write conv -> act -> BN, conv -> BN -> act and conv -> BN as separate
// full-resolution passes; eager PyTorch runs each as its own kernel (BN training alone reads its input 3-4 times).
// These kernels compute the same function in two passes forward and two passes backward, recomputing the
// activation instead of storing it. Statistics are accumulated in double; results equal PyTorch's within float
// rounding (tests/test_fused.py checks 1e-5).
//
// Layouts: "planar" = NCHW contiguous, viewed as (N, C, S); "pixel" = channels_last contiguous, viewed as (P, C).
// act: 0 identity, 1 relu, 2 hardswish, 3 gelu (erf).  pre = act then norm, otherwise norm then act.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr int64_t kBlock = 1024;  // elements summed in float before the sum moves to double

// exp and erf written with arithmetic only, so that the compiler vectorizes the loops that use them (libm's expf and
// erff are scalar calls). exp: range reduction to r in [-ln2/2, ln2/2], degree-6 Taylor (relative error < 2e-7).
// erf: Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7). GELU built on them differs from PyTorch's by < 1e-6.
inline float exp_f(float x) {
  x = std::min(std::max(x, -87.f), 88.f);
  const float k = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - k * 0.693145751953125f - k * 1.428606765330187e-06f;
  float p = 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  return p * __builtin_bit_cast(float, bits);
}

inline float erf_f(float x) {
  const float a = std::fabs(x);
  const float t = 1.f / (1.f + 0.3275911f * a);
  float p = 1.061405429f;
  p = p * t - 1.453152027f;
  p = p * t + 1.421413741f;
  p = p * t - 0.284496736f;
  p = p * t + 0.254829592f;
  const float y = 1.f - p * t * exp_f(-a * a);
  return std::copysign(y, x);
}

template <int A>
inline float act_f(float v) {
  if constexpr (A == 0) {
    return v;
  } else if constexpr (A == 1) {
    return v > 0.f ? v : 0.f;
  } else if constexpr (A == 2) {
    return v * std::min(std::max(v + 3.f, 0.f), 6.f) * (1.f / 6.f);
  } else {
    return 0.5f * v * (1.f + erf_f(v * 0.70710678118654752f));
  }
}

// derivative of act at v (PyTorch's conventions: relu'(0) = 0, hardswish'(v) = v/3 + 0.5 on [-3, 3]).
template <int A>
inline float act_d(float v) {
  if constexpr (A == 0) {
    return 1.f;
  } else if constexpr (A == 1) {
    return static_cast<float>(v > 0.f);
  } else if constexpr (A == 2) {  // written as selects so that the loops vectorize (no unpredictable branches)
    float d = v * (1.f / 3.f) + 0.5f;
    d = v < -3.f ? 0.f : d;
    return v > 3.f ? 1.f : d;
  } else {
    const float cdf = 0.5f * (1.f + erf_f(v * 0.70710678118654752f));
    const float pdf = exp_f(-0.5f * v * v) * 0.39894228040143267f;
    return cdf + v * pdf;
  }
}

// Per-channel float partial sums of a pixel-layout chunk, moved into the double totals (and reset).
inline void flush_partials(std::vector<float>& f1, std::vector<float>& f2, double* s1, double* s2, int64_t C) {
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) {
    s1[c] += f1[c];
    s2[c] += f2[c];
    f1[c] = f2[c] = 0.f;
  }
}

struct Dims {
  int64_t n, c, s;  // planar: N, C, H*W; pixel: n = N*H*W (pixels), c = C, s = 1
};

Dims dims_of(const at::Tensor& x, bool pixel) {
  const int64_t N = x.size(0), C = x.size(1), S = x.size(2) * x.size(3);
  return pixel ? Dims{N * S, C, 1} : Dims{N, C, S};
}

int64_t num_chunks(int64_t work) { return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), work)); }

// ---------------------------------------------------------------------------------------------------------------
// BatchNorm (training statistics) with a fused activation.
// pre = (order == 0): a = act(x), y = BN(a).   post = (order == 1): y = act(BN(x)).

template <int A, bool PRE>
std::vector<at::Tensor> bn_forward_impl(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, double eps,
                                        bool pixel) {
  const Dims d = dims_of(x, pixel);
  const int64_t C = d.c;
  const float* xp = x.data_ptr<float>();
  auto y = at::empty_like(x);
  float* yp = y.data_ptr<float>();
  auto mean = at::empty({C}, x.options());
  auto invstd = at::empty({C}, x.options());
  auto var = at::empty({C}, x.options());
  float* mp = mean.data_ptr<float>();
  float* ip = invstd.data_ptr<float>();
  float* vp = var.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  const float* bp = b.data_ptr<float>();
  const double count = static_cast<double>(pixel ? d.n : d.n * d.s);
  auto value = [&](float v) { return PRE ? act_f<A>(v) : v; };

  if (!pixel) {
    at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        const float shift = value(xp[c * d.s]);
        double s1 = 0.0, s2 = 0.0;
        for (int64_t n = 0; n < d.n; ++n) {
          const float* row = xp + (n * C + c) * d.s;
          for (int64_t i0 = 0; i0 < d.s; i0 += kBlock) {  // float partial sums over a block, folded into double
            const int64_t i1 = std::min(d.s, i0 + kBlock);
            float f1 = 0.f, f2 = 0.f;
#pragma omp simd reduction(+ : f1, f2)
            for (int64_t i = i0; i < i1; ++i) {
              const float v = value(row[i]) - shift;
              f1 += v;
              f2 += v * v;
            }
            s1 += f1;
            s2 += f2;
          }
        }
        const double m1 = s1 / count;
        const double v = std::max(0.0, s2 / count - m1 * m1);
        mp[c] = static_cast<float>(m1 + shift);
        vp[c] = static_cast<float>(v);
        ip[c] = static_cast<float>(1.0 / std::sqrt(v + eps));
      }
    });
    at::parallel_for(0, d.n * C, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t c = r % C;
        const float scale = ip[c] * wp[c];  // (a - mean) * scale + bias: no cancellation when |mean| >> std
        const float mu = mp[c], off = bp[c];
        const float* row = xp + r * d.s;
        float* out = yp + r * d.s;
#pragma omp simd
        for (int64_t i = 0; i < d.s; ++i) {
          const float z = (value(row[i]) - mu) * scale + off;
          out[i] = PRE ? z : act_f<A>(z);
        }
      }
    });
  } else {
    const int64_t T = num_chunks(d.n);
    std::vector<double> part1(T * C, 0.0), part2(T * C, 0.0);
    std::vector<float> shift(C);
    for (int64_t c = 0; c < C; ++c) shift[c] = value(xp[c]);
    const int64_t chunk = (d.n + T - 1) / T;
    at::parallel_for(0, T, 1, [&](int64_t t0, int64_t t1) {
      std::vector<float> f1(C), f2(C);
      for (int64_t t = t0; t < t1; ++t) {
        double* s1 = part1.data() + t * C;
        double* s2 = part2.data() + t * C;
        const int64_t p0 = t * chunk, p1 = std::min(d.n, p0 + chunk);
        std::fill(f1.begin(), f1.end(), 0.f);
        std::fill(f2.begin(), f2.end(), 0.f);
        for (int64_t p = p0; p < p1; ++p) {
          const float* px = xp + p * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) {
            const float v = value(px[c]) - shift[c];
            f1[c] += v;
            f2[c] += v * v;
          }
          if (((p - p0) & 255) == 255) flush_partials(f1, f2, s1, s2, C);
        }
        flush_partials(f1, f2, s1, s2, C);
      }
    });
    std::vector<float> scale(C), off(C);
    for (int64_t c = 0; c < C; ++c) {
      double s1 = 0.0, s2 = 0.0;
      for (int64_t t = 0; t < T; ++t) {
        s1 += part1[t * C + c];
        s2 += part2[t * C + c];
      }
      const double m1 = s1 / count;
      const double v = std::max(0.0, s2 / count - m1 * m1);
      mp[c] = static_cast<float>(m1 + shift[c]);
      vp[c] = static_cast<float>(v);
      ip[c] = static_cast<float>(1.0 / std::sqrt(v + eps));
      scale[c] = ip[c] * wp[c];
      off[c] = bp[c];
    }
    at::parallel_for(0, d.n, 2048, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const float* px = xp + p * C;
        float* out = yp + p * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          const float z = (value(px[c]) - mp[c]) * scale[c] + off[c];
          out[c] = PRE ? z : act_f<A>(z);
        }
      }
    });
  }
  return {y, mean, invstd, var};
}

// Returns grad_x, grad_weight, grad_bias.
template <int A, bool PRE>
std::vector<at::Tensor> bn_backward_impl(const at::Tensor& gy, const at::Tensor& x, const at::Tensor& w,
                                         const at::Tensor& b, const at::Tensor& mean, const at::Tensor& invstd,
                                         bool pixel) {
  const Dims d = dims_of(x, pixel);
  const int64_t C = d.c;
  const float* xp = x.data_ptr<float>();
  const float* gp = gy.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  const float* bp = b.data_ptr<float>();
  const float* mp = mean.data_ptr<float>();
  const float* ip = invstd.data_ptr<float>();
  auto gx = at::empty_like(x);
  float* gxp = gx.data_ptr<float>();
  auto gw = at::empty({C}, x.options());
  auto gb = at::empty({C}, x.options());
  float* gwp = gw.data_ptr<float>();
  float* gbp = gb.data_ptr<float>();
  const double count = static_cast<double>(pixel ? d.n : d.n * d.s);

  // g' (the gradient at the BN output) and xhat at one element.
  auto at_elem = [&](float xv, float gv, int64_t c, float& xhat, float& g, float& dact) {
    if (PRE) {
      xhat = (act_f<A>(xv) - mp[c]) * ip[c];
      g = gv;
      dact = act_d<A>(xv);
    } else {
      xhat = (xv - mp[c]) * ip[c];
      g = gv * act_d<A>(xhat * wp[c] + bp[c]);
      dact = 1.f;
    }
  };

  std::vector<double> sg(C, 0.0), sgx(C, 0.0);
  if (!pixel) {
    at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        double a1 = 0.0, a2 = 0.0;
        for (int64_t n = 0; n < d.n; ++n) {
          const float* row = xp + (n * C + c) * d.s;
          const float* grow = gp + (n * C + c) * d.s;
          for (int64_t i0 = 0; i0 < d.s; i0 += kBlock) {
            const int64_t i1 = std::min(d.s, i0 + kBlock);
            float f1 = 0.f, f2 = 0.f;
#pragma omp simd reduction(+ : f1, f2)
            for (int64_t i = i0; i < i1; ++i) {
              float xhat, g, da;
              at_elem(row[i], grow[i], c, xhat, g, da);
              f1 += g;
              f2 += g * xhat;
            }
            a1 += f1;
            a2 += f2;
          }
        }
        sg[c] = a1;
        sgx[c] = a2;
      }
    });
  } else {
    const int64_t T = num_chunks(d.n);
    std::vector<double> part1(T * C, 0.0), part2(T * C, 0.0);
    const int64_t chunk = (d.n + T - 1) / T;
    at::parallel_for(0, T, 1, [&](int64_t t0, int64_t t1) {
      std::vector<float> f1(C), f2(C);
      for (int64_t t = t0; t < t1; ++t) {
        double* s1 = part1.data() + t * C;
        double* s2 = part2.data() + t * C;
        const int64_t p0 = t * chunk, p1 = std::min(d.n, p0 + chunk);
        std::fill(f1.begin(), f1.end(), 0.f);
        std::fill(f2.begin(), f2.end(), 0.f);
        for (int64_t p = p0; p < p1; ++p) {
          const float* px = xp + p * C;
          const float* pg = gp + p * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) {
            float xhat, g, da;
            at_elem(px[c], pg[c], c, xhat, g, da);
            f1[c] += g;
            f2[c] += g * xhat;
          }
          if (((p - p0) & 255) == 255) flush_partials(f1, f2, s1, s2, C);
        }
        flush_partials(f1, f2, s1, s2, C);
      }
    });
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t t = 0; t < T; ++t) {
        sg[c] += part1[t * C + c];
        sgx[c] += part2[t * C + c];
      }
    }
  }
  std::vector<float> k(C), mg(C), mgx(C);
  for (int64_t c = 0; c < C; ++c) {
    gwp[c] = static_cast<float>(sgx[c]);
    gbp[c] = static_cast<float>(sg[c]);
    k[c] = wp[c] * ip[c];
    mg[c] = static_cast<float>(sg[c] / count);
    mgx[c] = static_cast<float>(sgx[c] / count);
  }
  auto write = [&](float xv, float gv, int64_t c) {
    float xhat, g, da;
    at_elem(xv, gv, c, xhat, g, da);
    return k[c] * (g - mg[c] - xhat * mgx[c]) * da;
  };
  if (!pixel) {
    at::parallel_for(0, d.n * C, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t c = r % C;
        const float* row = xp + r * d.s;
        const float* grow = gp + r * d.s;
        float* out = gxp + r * d.s;
#pragma omp simd
        for (int64_t i = 0; i < d.s; ++i) out[i] = write(row[i], grow[i], c);
      }
    });
  } else {
    at::parallel_for(0, d.n, 2048, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const float* px = xp + p * C;
        const float* pg = gp + p * C;
        float* out = gxp + p * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) out[c] = write(px[c], pg[c], c);
      }
    });
  }
  return {gx, gw, gb};
}

// Inference: y = act(x) * scale + shift (order 0) or act(x * scale + shift) (order 1), one pass.
template <int A, bool PRE>
at::Tensor affine_act_impl(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift, bool pixel) {
  const Dims d = dims_of(x, pixel);
  const int64_t C = d.c;
  const float* xp = x.data_ptr<float>();
  const float* sp = scale.data_ptr<float>();
  const float* hp = shift.data_ptr<float>();
  auto y = at::empty_like(x);
  float* yp = y.data_ptr<float>();
  if (!pixel) {
    at::parallel_for(0, d.n * C, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t c = r % C;
        const float s = sp[c], h = hp[c];
        const float* row = xp + r * d.s;
        float* out = yp + r * d.s;
#pragma omp simd
        for (int64_t i = 0; i < d.s; ++i) out[i] = PRE ? act_f<A>(row[i]) * s + h : act_f<A>(row[i] * s + h);
      }
    });
  } else {
    at::parallel_for(0, d.n, 2048, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const float* px = xp + p * C;
        float* out = yp + p * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) out[c] = PRE ? act_f<A>(px[c]) * sp[c] + hp[c] : act_f<A>(px[c] * sp[c] + hp[c]);
      }
    });
  }
  return y;
}

void check(const at::Tensor& x, bool pixel) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat && x.device().is_cpu(), "fused norm-act: 4D float32 CPU only");
  TORCH_CHECK(pixel ? x.is_contiguous(at::MemoryFormat::ChannelsLast) : x.is_contiguous(),
              "fused norm-act: input not in the layout asked for");
}

#define DISPATCH(ACT, PRE, CALL)                                   \
  switch (ACT) {                                                   \
    case 0: return PRE ? CALL(0, true) : CALL(0, false);           \
    case 1: return PRE ? CALL(1, true) : CALL(1, false);           \
    case 2: return PRE ? CALL(2, true) : CALL(2, false);           \
    case 3: return PRE ? CALL(3, true) : CALL(3, false);           \
    default: TORCH_CHECK(false, "fused norm-act: unknown activation ", ACT); \
  }

}  // namespace

std::vector<at::Tensor> bn_act_forward(at::Tensor x, at::Tensor w, at::Tensor b, double eps, int64_t act, bool pre,
                                       bool pixel) {
  check(x, pixel);
#define CALL(A, P) bn_forward_impl<A, P>(x, w, b, eps, pixel)
  DISPATCH(act, pre, CALL)
#undef CALL
}

std::vector<at::Tensor> bn_act_backward(at::Tensor gy, at::Tensor x, at::Tensor w, at::Tensor b, at::Tensor mean,
                                        at::Tensor invstd, int64_t act, bool pre, bool pixel) {
  check(x, pixel);
  gy = pixel ? gy.contiguous(at::MemoryFormat::ChannelsLast) : gy.contiguous();
#define CALL(A, P) bn_backward_impl<A, P>(gy, x, w, b, mean, invstd, pixel)
  DISPATCH(act, pre, CALL)
#undef CALL
}

at::Tensor affine_act(at::Tensor x, at::Tensor scale, at::Tensor shift, int64_t act, bool pre, bool pixel) {
  check(x, pixel);
#define CALL(A, P) affine_act_impl<A, P>(x, scale, shift, pixel)
  DISPATCH(act, pre, CALL)
#undef CALL
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("bn_act_forward", &bn_act_forward);
  m.def("bn_act_backward", &bn_act_backward);
  m.def("affine_act", &affine_act);
}
