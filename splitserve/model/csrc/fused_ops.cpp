// Fused element-wise ops of a decoder layer for CPU, float32 and bfloat16 rows.
//
// Each one replaces several torch ops (and their temporaries) with one pass over the rows,
// rounding to the activation dtype exactly where Hugging Face's eager code does, so bf16
// results match transformers' op-by-op arithmetic:
//   add_rms_norm: residual = x + residual (rounded); out = w * round(residual * rsqrt(...))
//   rotary:       x = round(round(x * cos) + round(rotate_half(x) * sin)), in place
//   silu_mul:     out = round(round(silu(gate)) * up)
// add_rms_norm of bf16 rows runs 16 lanes at a time where AVX-512 is available (the
// compiler vectorises the rest). Also argmax_rows: greedy sampling's argmax over logits.
// Built with paged_decode.cpp into one library (see splitserve/model/native.py).

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "dtype.h"
#include "simd.h"

namespace {

using splitserve::round_to;
using splitserve::store;
using splitserve::to_float;

#if defined(__AVX512F__)
// bf16 rows, 16 lanes at a time: the scalar loops' roundings, lane for lane (the sum of
// squares adds in another order: float32 rounding differences only)
void add_rms_norm_row_bf16(const uint16_t* xr, uint16_t* res, const uint16_t* weight,
                           uint16_t* o, int64_t dim, float eps, int has_x) {
  using namespace splitserve;
  __m512 sum = _mm512_setzero_ps();
  for (int64_t d = 0; d < dim; d += 16) {
    __m512 v = load16(res + d);
    if (has_x) {
      v = round_bf16(_mm512_add_ps(load16(xr + d), v));
      store16(v, res + d);
    }
    sum = _mm512_fmadd_ps(v, v, sum);
  }
  const float inv = 1.f / std::sqrt(_mm512_reduce_add_ps(sum) / static_cast<float>(dim) + eps);
  const __m512 vinv = _mm512_set1_ps(inv);
  for (int64_t d = 0; d < dim; d += 16)
    store16(_mm512_mul_ps(load16(weight + d), round_bf16(_mm512_mul_ps(load16(res + d), vinv))),
            o + d);
}

constexpr bool kVectorBf16 = true;
#else
void add_rms_norm_row_bf16(const uint16_t*, uint16_t*, const uint16_t*, uint16_t*, int64_t,
                           float, int) {}
constexpr bool kVectorBf16 = false;
#endif

template <typename T>
void add_rms_norm(const T* x, T* residual, const T* weight, T* out, int64_t rows, int64_t dim,
                  float eps, int has_x, int num_threads) {
#pragma omp parallel for num_threads(num_threads) schedule(static) if (rows > 16)
  for (int64_t r = 0; r < rows; ++r) {
    if constexpr (std::is_same_v<T, uint16_t> && kVectorBf16) {
      if (dim % 16 == 0) {
        add_rms_norm_row_bf16(x + r * dim, residual + r * dim, weight, out + r * dim, dim, eps,
                              has_x);
        continue;
      }
    }
    T* res = residual + r * dim;
    const T* xr = x + r * dim;
    float sum = 0.f;
    if (has_x) {
      for (int64_t d = 0; d < dim; ++d) {
        const float v = round_to(to_float(xr[d]) + to_float(res[d]), res);
        store(v, res + d);
        sum += v * v;
      }
    } else {
      for (int64_t d = 0; d < dim; ++d) {
        const float v = to_float(res[d]);
        sum += v * v;
      }
    }
    const float inv = 1.f / std::sqrt(sum / static_cast<float>(dim) + eps);
    T* o = out + r * dim;
    for (int64_t d = 0; d < dim; ++d)
      store(to_float(weight[d]) * round_to(to_float(res[d]) * inv, o), o + d);
  }
}

template <typename T>
void rotary(T* x, const T* cos, const T* sin, int64_t tokens, int64_t heads, int64_t dim,
            int64_t row_stride, int num_threads) {
  const int64_t half = dim / 2;
#pragma omp parallel for num_threads(num_threads) schedule(static) if (tokens > 16)
  for (int64_t t = 0; t < tokens; ++t) {
    const T* c = cos + t * dim;
    const T* s = sin + t * dim;
    for (int64_t h = 0; h < heads; ++h) {
      T* v = x + t * row_stride + h * dim;
      float lo[256], hi[256];  // head_dim <= 512 (checked by the caller)
      for (int64_t d = 0; d < half; ++d) {
        lo[d] = to_float(v[d]);
        hi[d] = to_float(v[half + d]);
      }
      for (int64_t d = 0; d < half; ++d) {
        // first half: x * cos - x2 * sin; second half: x2 * cos + x1 * sin
        const float a = round_to(lo[d] * to_float(c[d]), v);
        const float b = round_to(-hi[d] * to_float(s[d]), v);
        store(a + b, v + d);
        const float a2 = round_to(hi[d] * to_float(c[half + d]), v);
        const float b2 = round_to(lo[d] * to_float(s[half + d]), v);
        store(a2 + b2, v + half + d);
      }
    }
  }
}

template <typename T>
void silu_mul(const T* gate_up, T* out, int64_t rows, int64_t dim, int num_threads) {
#pragma omp parallel for num_threads(num_threads) schedule(static) if (rows > 16)
  for (int64_t r = 0; r < rows; ++r) {
    const T* g = gate_up + r * 2 * dim;
    const T* u = g + dim;
    T* o = out + r * dim;
    for (int64_t d = 0; d < dim; ++d) {
      const float gv = to_float(g[d]);
      const float act = round_to(gv / (1.f + std::exp(-gv)), o);
      store(act * to_float(u[d]), o + d);
    }
  }
}

// NaN by its bits: this file is built with -ffast-math, under which `x != x` folds away.
inline bool is_nan(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return (u & 0x7FFFFFFFu) > 0x7F800000u;
}

// First index of the row's maximum, or of its first NaN (torch's max(dim) semantics).
int64_t argmax_row(const float* x, int64_t cols) {
  float best = x[0];
  int64_t c = 0;
#if defined(__AVX512F__)
  // pass 1: the maximum and whether any NaN, 16 lanes at a time (integer test for NaN)
  const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF);
  const __m512i inf_bits = _mm512_set1_epi32(0x7F800000);
  __m512 vmax = _mm512_set1_ps(x[0]);
  __mmask16 nan = 0;
  for (; c + 16 <= cols; c += 16) {
    const __m512 v = _mm512_loadu_ps(x + c);
    nan |= _mm512_cmpgt_epi32_mask(_mm512_and_si512(_mm512_castps_si512(v), abs_mask), inf_bits);
    vmax = _mm512_max_ps(vmax, v);
  }
  if (nan == 0) best = _mm512_reduce_max_ps(vmax);
  else c = 0;  // a NaN somewhere: the scalar scan below finds the first one
#endif
  for (int64_t i = c; i < cols; ++i) {
    if (is_nan(x[i])) return i;
    if (x[i] > best) best = x[i];
  }
  for (int64_t i = 0; i < cols; ++i)
    if (x[i] == best) return i;
  return 0;
}

}  // namespace

extern "C" {

void argmax_rows_f32(const float* x, int64_t rows, int64_t cols, int64_t row_stride,
                     int64_t* out, int num_threads) {
#pragma omp parallel for num_threads(num_threads) schedule(static) if (rows > 16)
  for (int64_t r = 0; r < rows; ++r) out[r] = argmax_row(x + r * row_stride, cols);
}


#define SPLITSERVE_FUSED(SUFFIX, T)                                                        \
  void add_rms_norm_##SUFFIX(const T* x, T* residual, const T* weight, T* out, int64_t rows, \
                             int64_t dim, float eps, int has_x, int num_threads) {           \
    add_rms_norm(x, residual, weight, out, rows, dim, eps, has_x, num_threads);             \
  }                                                                                          \
  void rotary_##SUFFIX(T* x, const T* cos, const T* sin, int64_t tokens, int64_t heads,      \
                       int64_t dim, int64_t row_stride, int num_threads) {                   \
    rotary(x, cos, sin, tokens, heads, dim, row_stride, num_threads);                        \
  }                                                                                          \
  void silu_mul_##SUFFIX(const T* gate_up, T* out, int64_t rows, int64_t dim,                \
                         int num_threads) {                                                  \
    silu_mul(gate_up, out, rows, dim, num_threads);                                          \
  }

SPLITSERVE_FUSED(f32, float)
SPLITSERVE_FUSED(bf16, uint16_t)

}  // extern "C"
