// The schemas of the fused ops, in one place, and the Python module fastgame._C.
//
// Mutated arguments are annotated (a!), so torch.compile / functionalization know the
// in-place ops. Names carry no trailing underscore: the dispatcher reserves that for
// "self"-returning in-place variants; the Python wrappers are cg_step_ / cg_direction_.
#include <Python.h>

#include "fastgame.h"

TORCH_LIBRARY(fastgame, m) {
  // (square_avg_new, eta, sqrt_eta, eta * grad); square_avg is only read.
  m.def("precondition(Tensor grad, Tensor square_avg, Tensor lr, Tensor step, float beta, float eps)"
        " -> (Tensor, Tensor, Tensor, Tensor)");
  // (A p = p + sqrt_eta * t, p . A p)
  m.def("cg_matvec(Tensor p, Tensor sqrt_eta, Tensor t) -> (Tensor, Tensor)");
  // alpha = rr / pAp; w += alpha p; u += alpha q; r -= alpha A p; returns r . r
  m.def("cg_step(Tensor(a!) w, Tensor(b!) u, Tensor(c!) r, Tensor p, Tensor q, Tensor ap, Tensor rr,"
        " Tensor pap) -> Tensor");
  // beta = rr_new / rr; p = r + beta p; returns sqrt_eta * p
  m.def("cg_direction(Tensor(a!) p, Tensor r, Tensor rr_new, Tensor rr, Tensor sqrt_eta) -> Tensor");
}

// `import fastgame._C` loads the library (and so runs the registrations above); the module
// itself has no Python functions: everything is reached through torch.ops.fastgame.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
