// The CPU loops compiled for AVX2 (8 floats a vector), used where the CPU has it. Only this
// file's own functions get the target: the standard headers come first. No FMA, so the
// rounding stays that of separate multiplies and adds, as in the torch twins.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>
#pragma GCC target("avx2")
#define FASTGAME_ISA avx2
#include "kernels.h"

namespace fastgame::cpu::avx2 {
FASTGAME_INSTANTIATE(template, float)
FASTGAME_INSTANTIATE(template, double)
}  // namespace fastgame::cpu::avx2
#endif
