// The Python module fastgame._C. `import fastgame._C` loads the library, and so runs the CPU
// kernels' TORCH_LIBRARY_IMPL registrations (csrc/cpu/ops.cpp); the module itself has no
// Python functions: everything is reached through torch.ops.fastgame, whose schemas
// fastgame/ops/schemas.py defines (the one list of the ops; see csrc/fastgame.h).
#include <Python.h>

extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
