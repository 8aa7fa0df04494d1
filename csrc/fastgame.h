// Shared declarations of the fused CGD vector ops (C++ CPU and CUDA implementations).
//
// The schemas (and fake kernels) are declared once, in fastgame/ops/schemas.py, which defines
// them with torch.library; the CPU and CUDA kernels register implementations for them with
// TORCH_LIBRARY_IMPL (the dispatcher joins the two in either load order). Their pure-torch
// twins, which define the numbers, are in fastgame/ops/reference.py. The argument checks of
// every op are here, once, shared by both devices.
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

// How an operand must look, relative to the op's first vector operand (`like`) or to the other
// player's vector (`other`, cg_step's u).
enum class Shape {
  Vector,       // contiguous 1-D, dtype and device of `like` (any size)
  LikeFirst,    // a Vector with as many elements as `like`
  LikeOther,    // a Vector with as many elements as `other`
  Scalar,       // one element (0-dim), any dtype and device
  StepSize,     // sqrt_eta: a Scalar (scalar step size, BCGD) or a LikeFirst vector (ACGD)
};

struct Operand {
  const char* name;
  const at::Tensor& tensor;
  Shape shape;
};

// Whether sqrt_eta is the one-element (scalar step size) form.
inline bool is_scalar_step(const at::Tensor& s) { return s.numel() == 1 && s.dim() <= 1; }

// The one argument check of every op: each operand in order, one clear message for the first
// that is wrong. `like` is the first operand; `other`, when given, sizes the LikeOther operands.
inline void check_operands(std::initializer_list<Operand> operands, const at::Tensor* other = nullptr) {
  const at::Tensor& like = operands.begin()->tensor;
  for (const Operand& o : operands) {
    const at::Tensor& t = o.tensor;
    Shape shape = o.shape;
    if (shape == Shape::Scalar || (shape == Shape::StepSize && is_scalar_step(t))) {
      TORCH_CHECK(t.numel() == 1, "fastgame: ", o.name, " must be a one-element (0-dim) tensor");
      continue;
    }
    TORCH_CHECK(t.dim() == 1 && t.is_contiguous(), "fastgame: ", o.name, " must be a contiguous 1-D tensor");
    TORCH_CHECK(t.scalar_type() == like.scalar_type(), "fastgame: ", o.name, " has dtype ", t.scalar_type(),
                ", expected ", like.scalar_type());
    TORCH_CHECK(t.device() == like.device(), "fastgame: ", o.name, " is on ", t.device(), ", expected ",
                like.device());
    const at::Tensor* size = shape == Shape::LikeOther ? other : shape == Shape::Vector ? nullptr : &like;
    if (size != nullptr) {
      TORCH_CHECK(t.numel() == size->numel(), "fastgame: ", o.name, " has ", t.numel(), " elements, expected ",
                  size->numel());
    }
  }
}

// Each op's operands, for both devices. The ops taking sqrt_eta return whether it is a scalar.

inline void check_precondition(const at::Tensor& grad, const at::Tensor& square_avg, const at::Tensor& lr,
                               const at::Tensor& step) {
  check_operands({{"grad", grad, Shape::Vector}, {"square_avg", square_avg, Shape::LikeFirst},
                  {"lr", lr, Shape::Scalar}, {"step", step, Shape::Scalar}});
}

inline bool check_cg_matvec(const at::Tensor& p, const at::Tensor& sqrt_eta, const at::Tensor& t) {
  check_operands({{"p", p, Shape::Vector}, {"t", t, Shape::LikeFirst}, {"sqrt_eta", sqrt_eta, Shape::StepSize}});
  return is_scalar_step(sqrt_eta);
}

// u and q have the other player's size.
inline void check_cg_step(const at::Tensor& w, const at::Tensor& u, const at::Tensor& r, const at::Tensor& p,
                          const at::Tensor& q, const at::Tensor& ap, const at::Tensor& rr, const at::Tensor& pap) {
  check_operands({{"w", w, Shape::Vector}, {"r", r, Shape::LikeFirst}, {"p", p, Shape::LikeFirst},
                  {"ap", ap, Shape::LikeFirst}, {"u", u, Shape::Vector}, {"q", q, Shape::LikeOther},
                  {"rr", rr, Shape::Scalar}, {"pap", pap, Shape::Scalar}},
                 &u);
}

inline bool check_cg_direction(const at::Tensor& p, const at::Tensor& r, const at::Tensor& rr_new,
                               const at::Tensor& rr, const at::Tensor& sqrt_eta) {
  check_operands({{"p", p, Shape::Vector}, {"r", r, Shape::LikeFirst}, {"rr_new", rr_new, Shape::Scalar},
                  {"rr", rr, Shape::Scalar}, {"sqrt_eta", sqrt_eta, Shape::StepSize}});
  return is_scalar_step(sqrt_eta);
}

}  // namespace fastgame
