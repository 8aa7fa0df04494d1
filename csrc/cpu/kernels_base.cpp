// The CPU loops compiled for the build's default instruction set (x86-64: SSE2).
#define FASTGAME_ISA base
#include "kernels.h"

namespace fastgame::cpu::base {
FASTGAME_INSTANTIATE(template, float)
FASTGAME_INSTANTIATE(template, double)
}  // namespace fastgame::cpu::base
