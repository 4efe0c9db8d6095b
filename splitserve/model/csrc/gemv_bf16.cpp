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

#if SPLITSERVE_GEMV_AMX
// AMX computes y^T = W x^T 16 W rows at a time: the A tile is 16 rows x 32 k of W read in
// place (row stride K), the B tile 16 k-pairs of x^T in the VNNI layout [K/2][M][2] (built
// once per call, a few KB), the C tile [16, M] float32. One tdpbf16ps takes 1 KB of W, so
// it keeps up with memory for any M <= 16 where the AVX-512 loop above runs out of
// dot-product throughput beyond four rows. Tried and dropped (no faster on llama-110m, one
// core): software prefetch, 4 far-apart blocks in flight, double-buffered A/B tiles, tile
// rows from far-apart W rows, and 17-64 x rows in 2-4 chunks (no faster than oneDNN).
constexpr int64_t kAmxMaxRows = 16;

struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Linux hands out the AMX register state only on request (once per process; oneDNN asks
// too, but maybe not before the first call here).
bool amx_permitted() {
  static const bool ok = [] {
    constexpr int kArchReqXcompPerm = 0x1023;
    constexpr int kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return ok;
}

void configure_tiles(int64_t m_rows) {
  TileConfig cfg;
  const auto m_bytes = static_cast<uint16_t>(4 * m_rows);  // M float32 / M bf16 pairs
  for (int t : {0, 1}) { cfg.rows[t] = 16; cfg.colsb[t] = m_bytes; }  // C: [16, M] f32
  for (int t : {2, 3}) { cfg.rows[t] = 16; cfg.colsb[t] = 64; }       // A: [16, 32] bf16
  cfg.rows[4] = 16; cfg.colsb[4] = m_bytes;                            // B: [16 pairs, M]
  _tile_loadconfig(&cfg);
}

// y[i][j .. j + 15] = round(c[0 .. 15][i] + bias[j .. j + 15]) for each x row i: C holds
// y^T, so each output row is a column of C (one 16-lane gather).
inline void store_rows(const float* c, int64_t m_rows, const uint16_t* bias, uint16_t* y,
                       int64_t y_stride, int64_t j) {
  const __m512i column = _mm512_mullo_epi32(
      _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
      _mm512_set1_epi32(static_cast<int>(m_rows)));
  __m512 b = _mm512_setzero_ps();
  if (bias != nullptr) {
    const __m512i wide = _mm512_cvtepu16_epi32(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias + j)));
    b = _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
  }
  for (int64_t i = 0; i < m_rows; ++i) {
    const __m512 v = _mm512_add_ps(_mm512_i32gather_ps(column, c + i, 4), b);
    __m256bh r = _mm512_cvtneps_pbh(v);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i * y_stride + j),
                        reinterpret_cast<__m256i&>(r));
  }
}

void gemv_amx(const uint16_t* x, int64_t x_stride, const uint16_t* w, const uint16_t* bias,
              uint16_t* y, int64_t y_stride, int64_t m_rows, int64_t n, int64_t k,
              int num_threads) {
  // x^T in VNNI order: xv[(p * M + i) * 2 + e] = x[i][2p + e]
  static thread_local std::vector<uint16_t> xv_buffer;
  xv_buffer.resize(static_cast<size_t>(k * m_rows));
  uint16_t* xv = xv_buffer.data();
  const int64_t num_pairs = k / 2;
  for (int64_t p = 0; p < num_pairs; ++p)
    for (int64_t i = 0; i < m_rows; ++i) {
      xv[(p * m_rows + i) * 2] = x[i * x_stride + 2 * p];
      xv[(p * m_rows + i) * 2 + 1] = x[i * x_stride + 2 * p + 1];
    }
  const int64_t b_stride = 4 * m_rows;  // bytes per k-pair row of B
  const int64_t w_stride = 2 * k;       // bytes per W row
  const int64_t num_pairs_of_blocks = n / 32;
#pragma omp parallel num_threads(num_threads) if (num_threads > 1)
  {
    configure_tiles(m_rows);
    alignas(64) float c[2][16 * kAmxMaxRows];
#pragma omp for schedule(static)
    for (int64_t g = 0; g < num_pairs_of_blocks; ++g) {
      const int64_t j = g * 32;
      const uint16_t* w0 = w + j * k;
      const uint16_t* w1 = w0 + 16 * k;
      _tile_zero(0);
      _tile_zero(1);
      for (int64_t c0 = 0; c0 < k; c0 += 32) {
        _tile_loadd(4, xv + c0 * m_rows, b_stride);
        _tile_loadd(2, w0 + c0, w_stride);
        _tile_loadd(3, w1 + c0, w_stride);
        _tile_dpbf16ps(0, 2, 4);
        _tile_dpbf16ps(1, 3, 4);
      }
      _tile_stored(0, c[0], b_stride);
      _tile_stored(1, c[1], b_stride);
      store_rows(c[0], m_rows, bias, y, y_stride, j);
      store_rows(c[1], m_rows, bias, y, y_stride, j + 16);
    }
#pragma omp single
    if (n % 32 >= 16) {  // one more block of 16 W rows
      const int64_t j = num_pairs_of_blocks * 32;
      _tile_zero(0);
      for (int64_t c0 = 0; c0 < k; c0 += 32) {
        _tile_loadd(4, xv + c0 * m_rows, b_stride);
        _tile_loadd(2, w + j * k + c0, w_stride);
        _tile_dpbf16ps(0, 2, 4);
      }
      _tile_stored(0, c[0], b_stride);
      store_rows(c[0], m_rows, bias, y, y_stride, j);
    }
    _tile_release();
  }
  for (int64_t j = n - n % 16; j < n; ++j)  // the last n % 16 rows on the AVX-512 path
    rows<1>(x, x_stride, w, bias, y, y_stride, m_rows, j, 0, k);
}
#endif  // SPLITSERVE_GEMV_AMX


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
