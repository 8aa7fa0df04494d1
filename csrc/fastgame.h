// Shared declarations of the fused CGD vector ops (C++ CPU and CUDA implementations).
//
// The schemas live in one place, csrc/ops.cpp (TORCH_LIBRARY(fastgame, m)); the CPU and CUDA
// kernels register implementations for them with TORCH_LIBRARY_IMPL. Their pure-torch twins,
// which define the numbers, are in fastgame/ops/reference.py.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

namespace fastgame {

// rr / pAp and rr' / rr after exact convergence are 0 / 0: that must give 0, not NaN, or a
// converged CG (masked iterations, CUDA graphs) would poison its iterates.
template <typename T>
C10_HOST_DEVICE inline T safe_div(T num, T den) {
  return den != T(0) ? num / den : T(0);
}

// A flat operand of an op: contiguous, 1-D and of the same dtype and device as `like`.
inline void check_vector(const at::Tensor& t, const at::Tensor& like, const char* name) {
  TORCH_CHECK(t.dim() == 1 && t.is_contiguous(), "fastgame: ", name, " must be a contiguous 1-D tensor");
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), "fastgame: ", name, " has dtype ", t.scalar_type(),
              ", expected ", like.scalar_type());
  TORCH_CHECK(t.device() == like.device(), "fastgame: ", name, " is on ", t.device(), ", expected ",
              like.device());
}

inline void check_same_size(const at::Tensor& t, const at::Tensor& like, const char* name) {
  TORCH_CHECK(t.numel() == like.numel(), "fastgame: ", name, " has ", t.numel(), " elements, expected ",
              like.numel());
}

inline void check_scalar(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.numel() == 1, "fastgame: ", name, " must be a one-element (0-dim) tensor");
}

// sqrt_eta is a one-element tensor (scalar step size, BCGD) or a vector like p (ACGD).
inline bool check_sqrt_eta(const at::Tensor& s, const at::Tensor& p) {
  if (s.numel() == 1 && s.dim() <= 1) return true;
  check_vector(s, p, "sqrt_eta");
  check_same_size(s, p, "sqrt_eta");
  return false;
}

}  // namespace fastgame
