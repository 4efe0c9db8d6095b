// AMX path of gemv_bf16.cpp (5-16 rows): included inside its anonymous namespace, after
// the AVX-512 helpers it uses. Split out only to keep each file readable.
#pragma once

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
