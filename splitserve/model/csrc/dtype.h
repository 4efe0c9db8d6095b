// float32 / bfloat16 element conversions shared by the CPU kernels. bfloat16 is carried as
// its raw uint16_t bits (no compiler bf16 type needed); rounding is to nearest even, as torch.
#pragma once

#include <cstdint>
#include <cstring>

namespace splitserve {

inline float to_float(float x) { return x; }
inline float to_float(uint16_t x) {  // bfloat16 bits -> float32 (exact)
  uint32_t u = static_cast<uint32_t>(x) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// x rounded to the precision of the element type the pointer names (float: unchanged)
inline float round_to(float x, const float*) { return x; }
inline float round_to(float x, const uint16_t*) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline void store(float x, float* o) { *o = x; }
inline void store(float x, uint16_t* o) {  // float32 -> bfloat16 bits
  uint32_t u;
  std::memcpy(&u, &x, 4);
  *o = static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

}  // namespace splitserve
