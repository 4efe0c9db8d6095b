// Tile kernels of the bfloat16 prefill attention (prefill_attn.cpp): a tile is 16 query rows
// of one head against a block of 32 keys. Two implementations of the same two products,
// on the same packed K/V layouts:
// * AMX (`_tile_dpbf16ps`): one 16x16x32 product per instruction;
// * AVX512-BF16 (`vdpbf16ps`): a query's dimension pair broadcast against 16 keys' pairs.
//
// Packed layouts, per KV head, for keys counted from the pack's first key (a multiple of
// 32), both in the "VNNI" form the B operand of both instructions wants (pairs of the
// reduced dimension next to each other, 16 output columns per 64-byte row):
//   K: [key block][half: 16 keys][D/32 dim chunk][16 dim pairs][16 keys][2 dims]
//   V: [key block][D/16 dim chunk][16 key pairs][16 dims][2 keys]
// so each (half, chunk) of K and each chunk of V is one 16 x 64-byte tile (1 KiB), and a
// key block of either is 32 * D elements.
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

constexpr int kRows = 16;  // query rows per tile
constexpr int kKeys = 32;  // keys per block
constexpr int kTileElems = 512;  // bfloat16 elements in one 16 x 64-byte tile

inline __m512bh as_bh(__m512i x) { return reinterpret_cast<__m512bh&>(x); }

// s[16][32] = q[16][D] . K^T for one key block (float32 sums of exact bf16 products)
template <int D>
inline void scores_avx(const uint16_t* q, const uint16_t* kp, float* s) {
  constexpr int C = D / 32;
  const uint32_t* q32 = reinterpret_cast<const uint32_t*>(q);
  for (int m = 0; m < kRows; m += 4) {  // 4 rows x 2 halves: 8 independent sums
    __m512 acc[4][2];
    for (int r = 0; r < 4; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int c = 0; c < C; ++c) {
      for (int p = 0; p < 16; ++p) {
        const __m512i k0 = _mm512_loadu_si512(kp + (c * 16 + p) * 32);
        const __m512i k1 = _mm512_loadu_si512(kp + ((C + c) * 16 + p) * 32);
        for (int r = 0; r < 4; ++r) {
          const __m512i qb = _mm512_set1_epi32(static_cast<int>(q32[(m + r) * D / 2 + c * 16 + p]));
          acc[r][0] = _mm512_dpbf16_ps(acc[r][0], as_bh(qb), as_bh(k0));
          acc[r][1] = _mm512_dpbf16_ps(acc[r][1], as_bh(qb), as_bh(k1));
        }
      }
    }
    for (int r = 0; r < 4; ++r) {
      _mm512_storeu_ps(s + (m + r) * kKeys, acc[r][0]);
      _mm512_storeu_ps(s + (m + r) * kKeys + 16, acc[r][1]);
    }
  }
}

// o[16][D] += p[16][32] . V for one key block (p bfloat16, o float32)
template <int D>
inline void pv_avx(const uint16_t* p, const uint16_t* vp, float* o) {
  constexpr int C = D / 16;
  const uint32_t* p32 = reinterpret_cast<const uint32_t*>(p);
  for (int m = 0; m < kRows; m += 2) {
    __m512 acc[2][C];
    for (int r = 0; r < 2; ++r)
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_loadu_ps(o + (m + r) * D + 16 * c);
    for (int kp = 0; kp < 16; ++kp) {
      const __m512i p0 = _mm512_set1_epi32(static_cast<int>(p32[m * 16 + kp]));
      const __m512i p1 = _mm512_set1_epi32(static_cast<int>(p32[(m + 1) * 16 + kp]));
      for (int c = 0; c < C; ++c) {
        const __m512i v = _mm512_loadu_si512(vp + (c * 16 + kp) * 32);
        acc[0][c] = _mm512_dpbf16_ps(acc[0][c], as_bh(p0), as_bh(v));
        acc[1][c] = _mm512_dpbf16_ps(acc[1][c], as_bh(p1), as_bh(v));
      }
    }
    for (int r = 0; r < 2; ++r)
      for (int c = 0; c < C; ++c) _mm512_storeu_ps(o + (m + r) * D + 16 * c, acc[r][c]);
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

// Every tile 16 rows x 64 bytes: A (16 rows x 32 bf16), B (16 pairs x 16 columns) and C
// (16 x 16 float32) all have that shape. Per thread; call before the tile kernels.
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

template <int D>
inline void scores_amx(const uint16_t* q, const uint16_t* kp, float* s) {
  constexpr int C = D / 32;
  _tile_zero(0);
  _tile_zero(1);
  for (int c = 0; c < C; ++c) {
    _tile_loadd(2, q + 32 * c, D * 2);
    _tile_loadd(3, kp + c * kTileElems, 64);
    _tile_loadd(4, kp + (C + c) * kTileElems, 64);
    _tile_dpbf16ps(0, 2, 3);
    _tile_dpbf16ps(1, 2, 4);
  }
  _tile_stored(0, s, kKeys * 4);
  _tile_stored(1, s + 16, kKeys * 4);
}

template <int D>
inline void pv_amx(const uint16_t* p, const uint16_t* vp, float* o) {
  constexpr int C = D / 16;
  _tile_loadd(5, p, 64);
  for (int c = 0; c < C; c += 2) {  // two accumulators in flight
    _tile_loadd(6, o + 16 * c, D * 4);
    _tile_loadd(7, vp + c * kTileElems, 64);
    _tile_loadd(0, o + 16 * (c + 1), D * 4);
    _tile_loadd(1, vp + (c + 1) * kTileElems, 64);
    _tile_dpbf16ps(6, 5, 7);
    _tile_dpbf16ps(0, 5, 1);
    _tile_stored(6, o + 16 * c, D * 4);
    _tile_stored(0, o + 16 * (c + 1), D * 4);
  }
}

#endif  // SPLITSERVE_HAVE_AMX

}  // namespace splitserve::prefill

#endif  // __AVX512BF16__
