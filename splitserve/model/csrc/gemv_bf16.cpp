// bfloat16 GEMV for decode: y[M, N] = x[M, K] @ W[N, K]^T (+ bias), for a few rows M.
//
// Decode with a small batch is bound by reading the weights once per step; oneDNN's packed
// GEMM reached ~11-12 GB/s on one core against ~15.6 GB/s of measured read bandwidth. This
// kernel reads W in its plain row-major [N, K] layout (no repacking) and accumulates in
// float32, with one of two loops:
//  - M <= kAvxMaxRows: AVX-512 BF16 `vdpbf16ps` (32 products per instruction) over
//    kStreams far-apart W rows at a time, with software prefetch (~16 GB/s);
//  - up to 16 rows: AMX tiles, whose dot-product throughput keeps up with memory (~13 GB/s)
//    where the AVX-512 loop's falls behind.
// Each W row is read from memory once per call whatever M is. Outputs are rounded to
// bfloat16 once, after the float32 bias add, as oneDNN does.
//
// Without AVX-512 BF16 at compile time a portable float32 loop computes the same sums in
// another order; Python uses this library only where `gemv_bf16_max_rows()` > 0 (elsewhere
// oneDNN is as good), and the tests run every path.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "dtype.h"

#if defined(__AVX512BF16__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>
#define SPLITSERVE_GEMV_FAST 1
#else
#define SPLITSERVE_GEMV_FAST 0
#endif

#if SPLITSERVE_GEMV_FAST && defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#define SPLITSERVE_GEMV_AMX 1
#else
#define SPLITSERVE_GEMV_AMX 0
#endif

namespace {

constexpr int kAbiVersion = 2;
constexpr int kStreams = 8;  // W rows read side by side, each from its own part of W
// Up to this many x rows the AVX-512 loop streams W fastest (its prefetch reaches ~16 GB/s
// against AMX's ~13); beyond, its dot products (one vdpbf16ps per 64 bytes of W per x row)
// fall behind memory and AMX takes over.
constexpr int64_t kAvxMaxRows = 4;
enum Path { kAuto = 0, kGeneric = 1, kAvx512 = 2, kAmx = 3 };

void gemv_generic(const uint16_t* x, int64_t x_stride, const uint16_t* w, const uint16_t* bias,
                  uint16_t* y, int64_t y_stride, int64_t m_rows, int64_t n, int64_t k,
                  int num_threads) {
  using splitserve::to_float;
#pragma omp parallel for num_threads(num_threads) schedule(static) if (num_threads > 1)
  for (int64_t j = 0; j < n; ++j) {
    const uint16_t* wr = w + j * k;
    for (int64_t i = 0; i < m_rows; ++i) {
      const uint16_t* xr = x + i * x_stride;
      float acc = 0.f;
      for (int64_t c = 0; c < k; ++c) acc += to_float(wr[c]) * to_float(xr[c]);
      if (bias != nullptr) acc += to_float(bias[j]);
      splitserve::store(acc, y + i * y_stride + j);
    }
  }
}

// transformers' bf16 MLP: round(round(silu(gate)) * up), gate and up already bf16
inline uint16_t silu_mul_bf16(float gate, float up) {
  const float act = splitserve::round_to(gate / (1.f + std::exp(-gate)),
                                         static_cast<const uint16_t*>(nullptr));
  uint16_t out;
  splitserve::store(act * up, &out);
  return out;
}

// y[i][d] = silu_mul(gate_up[i][d], gate_up[i][dim + d]) for the [m_rows, 2 * dim] rows
void silu_mul_rows(const uint16_t* gate_up, uint16_t* y, int64_t y_stride, int64_t m_rows,
                   int64_t dim) {
  using splitserve::to_float;
  for (int64_t i = 0; i < m_rows; ++i) {
    const uint16_t* g = gate_up + i * 2 * dim;
    for (int64_t d = 0; d < dim; ++d)
      y[i * y_stride + d] = silu_mul_bf16(to_float(g[d]), to_float(g[dim + d]));
  }
}

#if SPLITSERVE_GEMV_FAST

// Software prefetch this many bf16 elements (512 bytes) ahead in every W row being read:
// with several streams the hardware prefetchers alone left ~15% of the bandwidth unused
// (llama-110m weights, one core: 13.6 -> 16 GB/s; 256 to 1024 bytes ahead all did well).
// The AMX loop below ran slower with it, and with 4 far-apart blocks instead of 2 adjacent.
constexpr int64_t kPrefetchAhead = 256;

inline void prefetch(const uint16_t* p) {
  _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0);
}

inline __m512bh as_bh(__m512i v) { return reinterpret_cast<__m512bh&>(v); }

inline __m512i load_tail(const uint16_t* p, __mmask32 mask) {
  return _mm512_maskz_loadu_epi16(mask, p);
}

inline uint16_t round_bf16(float f) {
  uint16_t out;
  splitserve::store(f, &out);
  return out;
}

// MR x rows (1..2) against R W rows j, j + step, ..., j + (R - 1) * step; K in steps of 32.
template <int MR, int R, bool SILU>
inline void block(const uint16_t* x, int64_t x_stride, const uint16_t* w, const uint16_t* bias,
                  uint16_t* y, int64_t y_stride, int64_t j, int64_t step, int64_t k) {
  __m512 acc[MR][R];
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < R; ++r) acc[i][r] = _mm512_setzero_ps();
  const uint16_t* wr[R];
  for (int r = 0; r < R; ++r) wr[r] = w + (j + r * step) * k;
  const int64_t k_main = k & ~int64_t{31};
  for (int64_t c = 0; c < k_main; c += 32) {
    for (int r = 0; r < R; ++r) prefetch(wr[r] + c + kPrefetchAhead);
    __m512bh wv[R];
    for (int r = 0; r < R; ++r) wv[r] = as_bh(_mm512_loadu_si512(wr[r] + c));
    for (int i = 0; i < MR; ++i) {
      const __m512bh xv = as_bh(_mm512_loadu_si512(x + i * x_stride + c));
      for (int r = 0; r < R; ++r) acc[i][r] = _mm512_dpbf16_ps(acc[i][r], wv[r], xv);
    }
  }
  if (k_main < k) {  // zero-masked tail: 0 * 0 in the unused lanes
    const __mmask32 mask = (__mmask32{1} << (k - k_main)) - 1;
    __m512bh wv[R];
    for (int r = 0; r < R; ++r) wv[r] = as_bh(load_tail(wr[r] + k_main, mask));
    for (int i = 0; i < MR; ++i) {
      const __m512bh xv = as_bh(load_tail(x + i * x_stride + k_main, mask));
      for (int r = 0; r < R; ++r) acc[i][r] = _mm512_dpbf16_ps(acc[i][r], wv[r], xv);
    }
  }
  for (int i = 0; i < MR; ++i) {
    uint16_t out[R];
    for (int r = 0; r < R; ++r) {
      float sum = _mm512_reduce_add_ps(acc[i][r]);
      if (bias != nullptr) sum += splitserve::to_float(bias[j + r * step]);
      out[r] = round_bf16(sum);
    }
    if constexpr (SILU) {  // rows r < R / 2 are gate rows, r + R / 2 their up rows
      for (int r = 0; r < R / 2; ++r)
        y[i * y_stride + j + r * step] = silu_mul_bf16(splitserve::to_float(out[r]),
                                                       splitserve::to_float(out[r + R / 2]));
    } else {
      for (int r = 0; r < R; ++r) y[i * y_stride + j + r * step] = out[r];
    }
  }
}

// All x rows against W rows j + r * step (r < R), two x rows at a time (2 x R float32
// accumulators fit the 32 vector registers): the first pair reads those W rows from
// memory, later pairs find them in L1/L2.
template <int R, bool SILU = false>
inline void rows(const uint16_t* x, int64_t x_stride, const uint16_t* w, const uint16_t* bias,
                 uint16_t* y, int64_t y_stride, int64_t m_rows, int64_t j, int64_t step,
                 int64_t k) {
  for (int64_t i = 0; i < m_rows; i += 2) {
    const uint16_t* xi = x + i * x_stride;
    uint16_t* yi = y + i * y_stride;
    if (m_rows - i == 1) {
      block<1, R, SILU>(xi, x_stride, w, bias, yi, y_stride, j, step, k);
    } else {
      block<2, R, SILU>(xi, x_stride, w, bias, yi, y_stride, j, step, k);
    }
  }
}

// One core streams memory fastest as several concurrent sequential streams far apart
// (~16.5 GB/s for 4 streams against ~14 GB/s for one, on the machine this was tuned on):
// W is cut into kStreams equal parts of `part` rows and each step reads the next row of
// every part.
void gemv_fast(const uint16_t* x, int64_t x_stride, const uint16_t* w, const uint16_t* bias,
               uint16_t* y, int64_t y_stride, int64_t m_rows, int64_t n, int64_t k,
               int num_threads) {
  const int64_t part = n / kStreams;
#pragma omp parallel for num_threads(num_threads) schedule(static) if (num_threads > 1)
  for (int64_t j = 0; j < part; ++j)
    rows<kStreams>(x, x_stride, w, bias, y, y_stride, m_rows, j, part, k);
  for (int64_t j = part * kStreams; j < n; ++j)  // the last n % kStreams rows, one by one
    rows<1>(x, x_stride, w, bias, y, y_stride, m_rows, j, 0, k);
}

// gemv_fast over a fused gate/up weight [2 * dim, K] (dim % (kStreams / 2) == 0) with the
// MLP's silu(gate) * up in the epilogue: the kStreams parts put each gate row's up row
// (dim rows further) in the same step, so y [m_rows, dim] is written once.
void gemv_silu_fast(const uint16_t* x, int64_t x_stride, const uint16_t* w,
                    const uint16_t* bias, uint16_t* y, int64_t y_stride, int64_t m_rows,
                    int64_t n, int64_t k, int num_threads) {
  const int64_t part = n / kStreams;
#pragma omp parallel for num_threads(num_threads) schedule(static) if (num_threads > 1)
  for (int64_t j = 0; j < part; ++j)
    rows<kStreams, true>(x, x_stride, w, bias, y, y_stride, m_rows, j, part, k);
}

#endif  // SPLITSERVE_GEMV_FAST

#include "gemv_amx.h"


}  // namespace

extern "C" {

int splitserve_gemv_abi_version() { return kAbiVersion; }

// 1 when the AVX-512 BF16 kernel was compiled in (the only case worth calling it for)
int gemv_bf16_fast() { return SPLITSERVE_GEMV_FAST; }

// Most rows of x for which this kernel beats oneDNN (measured on llama-110m shapes): 16
// with AMX (permitted by the OS), 2 with AVX-512 BF16 dot products only, else 0.
int gemv_bf16_max_rows() {
#if SPLITSERVE_GEMV_AMX
  if (amx_permitted()) return static_cast<int>(kAmxMaxRows);
#endif
  return SPLITSERVE_GEMV_FAST ? static_cast<int>(kAvxMaxRows) : 0;
}

// x [m_rows, k] (row stride x_stride), w [n, k] contiguous, bias [n] or null,
// y [m_rows, n] (row stride y_stride); all bfloat16 bits. `path` (enum Path) forces a loop
// for tests; a forced path that was not compiled in (or does not fit) falls back.
void gemv_bf16(const uint16_t* x, int64_t x_stride, const uint16_t* w, const uint16_t* bias,
               uint16_t* y, int64_t y_stride, int64_t m_rows, int64_t n, int64_t k,
               int num_threads, int path) {
#if SPLITSERVE_GEMV_AMX
  const bool amx_fits = m_rows <= kAmxMaxRows && k % 32 == 0 && n >= 16;
  if (((path == kAuto && m_rows > kAvxMaxRows) || path == kAmx) && amx_fits &&
      amx_permitted()) {
    gemv_amx(x, x_stride, w, bias, y, y_stride, m_rows, n, k, num_threads);
    return;
  }
#endif
#if SPLITSERVE_GEMV_FAST
  if (path != kGeneric) {
    gemv_fast(x, x_stride, w, bias, y, y_stride, m_rows, n, k, num_threads);
    return;
  }
#endif
  (void)path;
  gemv_generic(x, x_stride, w, bias, y, y_stride, m_rows, n, k, num_threads);
}

// silu(gate) * up of the MLP from its fused gate/up weight w [n = 2 * dim, k] (gate rows
// first): y [m_rows, dim] (row stride y_stride). Same paths as gemv_bf16; the AVX-512 one
// applies the activation in its epilogue, the others after a GEMV into a scratch buffer.
void gemv_silu_mul_bf16(const uint16_t* x, int64_t x_stride, const uint16_t* w,
                        const uint16_t* bias, uint16_t* y, int64_t y_stride, int64_t m_rows,
                        int64_t n, int64_t k, int num_threads, int path) {
#if SPLITSERVE_GEMV_FAST
  if (((path == kAuto && m_rows <= kAvxMaxRows) || path == kAvx512) && n % kStreams == 0) {
    gemv_silu_fast(x, x_stride, w, bias, y, y_stride, m_rows, n, k, num_threads);
    return;
  }
#endif
  static thread_local std::vector<uint16_t> gate_up;
  gate_up.resize(static_cast<size_t>(m_rows * n));
  gemv_bf16(x, x_stride, w, bias, gate_up.data(), n, m_rows, n, k, num_threads, path);
  silu_mul_rows(gate_up.data(), y, y_stride, m_rows, n / 2);
}

}  // extern "C"
