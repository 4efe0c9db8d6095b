// AVX-512 helpers shared by the CPU kernels: exp, and bfloat16 <-> float32 for 16 lanes
// with the same round-to-nearest-even as dtype.h's scalar versions (and torch).
#pragma once

#if defined(__AVX512F__)
#include <immintrin.h>

#include <cstdint>

namespace splitserve {

// exp(x): n = round(x / ln2), r = x - n ln2 in [-ln2/2, ln2/2] (Cody-Waite split of ln2),
// exp(r) by its degree-7 Taylor polynomial (relative error < 2e-7), times 2^n by scalef.
// Below -87 the result underflows to ~0; above ~88.7 it is inf.
inline __m512 exp512(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
  __m512 p = _mm512_set1_ps(1.f / 5040.f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 720.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 120.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 24.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 6.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, n);
}

inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const uint16_t* p) {  // 16 bfloat16 -> float32 (exact)
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}

// bits of x rounded to bfloat16 (nearest even), still in the high half of each lane
inline __m512i bf16_round_bits(__m512 x) {
  const __m512i u = _mm512_castps_si512(x);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  return _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), lsb);
}
// x rounded to bfloat16 precision, as float32 (dtype.h's round_to, 16 lanes)
inline __m512 round_bf16(__m512 x) {
  return _mm512_castsi512_ps(
      _mm512_and_si512(bf16_round_bits(x), _mm512_set1_epi32(static_cast<int>(0xFFFF0000u))));
}
inline void store16(__m512 x, uint16_t* p) {  // float32 -> 16 bfloat16 (dtype.h's store)
  const __m256i packed = _mm512_cvtepi32_epi16(_mm512_srli_epi32(bf16_round_bits(x), 16));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), packed);
}

}  // namespace splitserve

#endif  // __AVX512F__
