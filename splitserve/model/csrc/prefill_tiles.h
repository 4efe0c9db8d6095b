// Tile kernels of the bfloat16 prefill attention (prefill_attn.cpp). A tile is 16 query
// rows of one head; keys come in blocks of 32. Everything is computed transposed, keys (or
// head dims) down and the 16 query rows across, so that a 16-lane vector holds one value
// of each query row: the online softmax's running max, rescale and denominator are then
// plain lane-wise vector ops, with no horizontal reductions.
//   S^T = K . Q^T    (A: 16 keys x 32 dims of K, row-major; B: Q^T in pair form)
//   O^T += V^T . P^T (A: 16 dims x 32 keys of V^T;          B: P^T in pair form)
// "Pair form" is the B layout both AMX `_tile_dpbf16ps` and AVX512-BF16 `vdpbf16ps` want:
// each 64-byte row holds, for 16 output columns, two consecutive elements of the reduced
// dimension. Layouts (bf16 unless noted; every tile 16 rows x 64 bytes = 512 elements):
//   qt  Q^T:  [D/32 chunk][16 dim pairs][16 rows][2]
//   kp  K:    [32 keys][D] per key block (row-major copy of the cache rows)
//   vt  V^T:  [D][32 keys] per key block
//   s   S^T:  [32 keys][16 rows] float32 per key block
//   pt  P^T:  [16 key pairs][16 rows][2] per key block
//   ot  O^T:  [D][16 rows] float32
// Two implementations of the products: AMX (one 16x16x32 product per instruction) and
// AVX512-BF16 (a broadcast pair of A against the 16 columns of B).
#pragma once

#if defined(__AVX512BF16__)
#include <immintrin.h>

#include <cstdint>

#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
#include <sys/syscall.h>
#include <unistd.h>
#define SPLITSERVE_HAVE_AMX 1
#endif

namespace splitserve::prefill {

constexpr int kRows = 16;        // query rows per tile
constexpr int kKeys = 32;        // keys per block
constexpr int kSubs = 4;         // key blocks per online-softmax update
constexpr int kTileElems = 512;  // bf16 elements (or 256 floats) in one tile

inline __m512bh as_bh(__m512i x) { return reinterpret_cast<__m512bh&>(x); }

// 16 x 16 32-bit transpose in registers: r[i] lane j <- r[j] lane i
inline void transpose16(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0xDD);
    t[i + 8] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0xDD);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xDD);
    r[i + 4] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0x88);
    r[i + 12] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0xDD);
  }
}

// 2^x: n = round(x), 2^(x - n) by its degree-4 Taylor polynomial (relative error < 5e-5,
// far below the bf16 rounding of the probabilities), times 2^n; x = -1e30 gives 0.
inline __m512 exp2_512(__m512 x) {
  const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(x, n);
  __m512 p = _mm512_set1_ps(9.618129107628477e-3f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550410866482158e-2f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.2402265069591007f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.6931471805599453f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, n);
}

// s = S^T of one key block: s[k][m] = K[k] . Q[m] (float32 sums of exact bf16 products)
template <int D>
inline void scores_avx(const uint16_t* qt, const uint16_t* kp, float* s) {
  constexpr int C = D / 32;
  for (int k = 0; k < kKeys; k += 8) {  // 8 keys: 8 independent sums per Q^T row
    const uint32_t* k32 = reinterpret_cast<const uint32_t*>(kp + k * D);
    __m512 acc[8];
    for (int i = 0; i < 8; ++i) acc[i] = _mm512_setzero_ps();
    for (int dp = 0; dp < C * 16; ++dp) {
      const __m512i q = _mm512_loadu_si512(qt + dp * 32);
      for (int i = 0; i < 8; ++i)
        acc[i] = _mm512_dpbf16_ps(
            acc[i], as_bh(_mm512_set1_epi32(static_cast<int>(k32[i * D / 2 + dp]))), as_bh(q));
    }
    for (int i = 0; i < 8; ++i) _mm512_storeu_ps(s + (k + i) * kRows, acc[i]);
  }
}

// ot += V^T . P^T over nsub consecutive key blocks (vt and pt of block j at j * 32 * D and
// j * 512)
template <int D>
inline void pv_avx(const uint16_t* pt, const uint16_t* vt, int nsub, float* ot) {
  for (int d = 0; d < D; d += 8) {
    __m512 acc[8];
    for (int i = 0; i < 8; ++i) acc[i] = _mm512_loadu_ps(ot + (d + i) * kRows);
    for (int j = 0; j < nsub; ++j) {
      const uint32_t* v32 = reinterpret_cast<const uint32_t*>(vt + j * kKeys * D + d * kKeys);
      for (int kp = 0; kp < 16; ++kp) {
        const __m512i p = _mm512_loadu_si512(pt + j * kTileElems + kp * 32);
        for (int i = 0; i < 8; ++i)
          acc[i] = _mm512_dpbf16_ps(
              acc[i], as_bh(_mm512_set1_epi32(static_cast<int>(v32[i * 16 + kp]))), as_bh(p));
      }
    }
    for (int i = 0; i < 8; ++i) _mm512_storeu_ps(ot + (d + i) * kRows, acc[i]);
  }
}

#if defined(SPLITSERVE_HAVE_AMX)

// Linux hands out AMX state only to processes that ask for it (once per process; torch's
// oneDNN usually has, but the kernels must not depend on that). False: use AVX512-BF16.
inline bool amx_permitted() {
  static const bool ok = [] {
    constexpr long kReqXcompPerm = 0x1023, kXtileData = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXtileData) == 0;
  }();
  return ok;
}

struct alignas(64) TileConfig {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// Every tile 16 rows x 64 bytes (A, B and C operands alike). Per thread, before use.
inline void amx_configure() {
  TileConfig cfg{};
  cfg.palette = 1;
  for (int i = 0; i < 8; ++i) {
    cfg.colsb[i] = 64;
    cfg.rows[i] = 16;
  }
  _tile_loadconfig(&cfg);
}

inline void amx_release() { _tile_release(); }

// Why four accumulators everywhere below: a tile product's latency is several times its
// issue interval, so chains of dependent products on one or two accumulator tiles leave
// the unit idle. Tiles: 0, 1, 4, 5 accumulators; 2 the B operand; 3, 6, 7 A operands.

// S^T of two key blocks (kp and kp + 32 D; s and s + 512), or one (two = false)
template <int D>
inline void scores_amx(const uint16_t* qt, const uint16_t* kp, float* s, bool two) {
  const uint16_t* kb = kp + kKeys * D;
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(4);
  _tile_zero(5);
  for (int c = 0; c < D / 32; ++c) {
    _tile_loadd(2, qt + c * kTileElems, 64);
    _tile_loadd(3, kp + 32 * c, D * 2);
    _tile_loadd(6, kp + 16 * D + 32 * c, D * 2);
    _tile_dpbf16ps(0, 3, 2);
    _tile_dpbf16ps(1, 6, 2);
    if (two) {
      _tile_loadd(7, kb + 32 * c, D * 2);
      _tile_loadd(3, kb + 16 * D + 32 * c, D * 2);
      _tile_dpbf16ps(4, 7, 2);
      _tile_dpbf16ps(5, 3, 2);
    }
  }
  _tile_stored(0, s, 64);
  _tile_stored(1, s + 16 * kRows, 64);
  if (two) {
    _tile_stored(4, s + 32 * kRows, 64);
    _tile_stored(5, s + 48 * kRows, 64);
  }
}

// ot += V^T . P^T over nsub key blocks, four 16-dim slices of O^T at a time
template <int D>
inline void pv_amx(const uint16_t* pt, const uint16_t* vt, int nsub, float* ot) {
  for (int c = 0; c < D / 16; c += 4) {
    _tile_loadd(0, ot + c * 256, 64);
    _tile_loadd(1, ot + (c + 1) * 256, 64);
    _tile_loadd(4, ot + (c + 2) * 256, 64);
    _tile_loadd(5, ot + (c + 3) * 256, 64);
    for (int j = 0; j < nsub; ++j) {
      const uint16_t* vb = vt + j * kKeys * D + c * kTileElems;
      _tile_loadd(2, pt + j * kTileElems, 64);
      _tile_loadd(3, vb, 64);
      _tile_loadd(6, vb + kTileElems, 64);
      _tile_loadd(7, vb + 2 * kTileElems, 64);
      _tile_dpbf16ps(0, 3, 2);
      _tile_dpbf16ps(1, 6, 2);
      _tile_dpbf16ps(4, 7, 2);
      _tile_loadd(3, vb + 3 * kTileElems, 64);
      _tile_dpbf16ps(5, 3, 2);
    }
    _tile_stored(0, ot + c * 256, 64);
    _tile_stored(1, ot + (c + 1) * 256, 64);
    _tile_stored(4, ot + (c + 2) * 256, 64);
    _tile_stored(5, ot + (c + 3) * 256, 64);
  }
}

#endif  // SPLITSERVE_HAVE_AMX

}  // namespace splitserve::prefill

#endif  // __AVX512BF16__
