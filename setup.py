"""Build script for fastgame.

The pure-torch package always installs. With torch importable at build time
(``pip install --no-build-isolation .``) it also builds the compiled ops:

* ``fastgame._C``    C++ CPU kernels and the op schemas (always, when torch is installed);
* ``fastgame._cuda`` CUDA kernels (when torch has CUDA and ``CUDA_HOME`` is set).

``FASTGAME_NO_EXTENSIONS=1`` skips both. A failed extension build only warns: the install
goes on and ``fastgame.ops`` falls back to the pure-torch twins (``fastgame.backends()``
says why). The Triton kernels ship as ``fastgame.triton_kernels`` (source: triton_kernels/).
"""
import importlib.util
import os
import warnings

from setuptools import find_packages, setup

PACKAGES = find_packages(include=["fastgame", "fastgame.*"]) + ["fastgame.triton_kernels"]
PACKAGE_DIR = {"fastgame.triton_kernels": "triton_kernels"}


def _sources(kind: str) -> list[str]:
    """The extension's sources, globbed by fastgame/ops/sources.py (loaded by path: no torch needed)."""
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location("_fastgame_sources", os.path.join(here, "fastgame", "ops", "sources.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.sources(kind, os.path.join(here, "csrc"))


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _extensions():
    """The extensions this machine can build, and the build_ext command that builds them."""
    if _flag("FASTGAME_NO_EXTENSIONS"):
        print("fastgame: FASTGAME_NO_EXTENSIONS is set; installing the pure-torch package only")
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except Exception as exc:  # torch missing at build time (e.g. build isolation): pure torch
        print(f"fastgame: torch not importable at build time ({exc}); skipping the compiled ops")
        return [], {}

    here = os.path.dirname(os.path.abspath(__file__))
    include = [os.path.join(here, "csrc")]
    cxx = ["-O3", "-fopenmp", "-fno-math-errno", "-ffp-contract=off"]
    exts = [CppExtension("fastgame._C", _sources("cpp"), include_dirs=include,
                         extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])]
    if torch.version.cuda is not None and CUDA_HOME is not None and not _flag("FASTGAME_NO_CUDA"):
        arch = os.environ.get("TORCH_CUDA_ARCH_LIST")
        nvcc = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
        if not arch:  # the common data-centre GPUs; TORCH_CUDA_ARCH_LIST overrides
            nvcc += ["-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90"]
        exts.append(CUDAExtension("fastgame._cuda", _sources("cuda"), include_dirs=include,
                                  extra_compile_args={"cxx": ["-O3"], "nvcc": nvcc}))
    else:
        why = "torch has no CUDA" if torch.version.cuda is None else "CUDA_HOME is not set"
        print(f"fastgame: skipping the CUDA extension ({why})")

    class TolerantBuildExt(BuildExtension):
        """Builds each extension on its own; one that fails is dropped with a warning."""

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as exc:  # compiler missing, CUDA/torch mismatch, ...
                self._failed.append(ext.name)
                warnings.warn(f"fastgame: building {ext.name} failed ({exc}); the pure-torch ops will be used")

        def build_extensions(self):
            self._failed = []
            try:
                super().build_extensions()
            except Exception as exc:  # e.g. torch's CUDA version check before any build
                warnings.warn(f"fastgame: building the compiled ops failed ({exc}); trying CPU only")
                self.extensions = [e for e in self.extensions if e.name == "fastgame._C"]
                try:
                    super().build_extensions()
                except Exception as exc2:
                    warnings.warn(f"fastgame: building fastgame._C failed ({exc2}); pure-torch ops only")
                    self._failed = [e.name for e in self.extensions]
            # Dropped extensions must not be copied or recorded as outputs.
            self.extensions = [e for e in self.extensions if e.name not in self._failed]

    return exts, {"build_ext": TolerantBuildExt.with_options(use_ninja=_ninja_available())}


def _ninja_available() -> bool:
    try:
        from torch.utils.cpp_extension import is_ninja_available
        return is_ninja_available()
    except Exception:
        return False


ext_modules, cmdclass = _extensions()

setup(
    name="fastgame",
    version="0.1.0",
    description="Fast competitive-gradient optimizers (ACGD, BCGD, GACGD) for two-player games in PyTorch",
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    python_requires=">=3.9",
    install_requires=["torch>=2.4", "numpy>=1.22", "scikit-learn>=1.0", "matplotlib>=3.5", "tqdm>=4.60",
                      "torchmetrics>=1.4"],  # the image metrics' Fréchet distance
    # gpu: the Triton ops; test: the suite's reference (CGDs) and its Triton-interpreter tests.
    extras_require={"gpu": ["triton>=3.0"], "test": ["pytest", "CGDs==0.4.5", "triton>=3.0"],
                    "tensorboard": ["tensorboard"]},  # the trainer's RUN_DIR/tensorboard/ scalars
    entry_points={"console_scripts": ["fastgame=fastgame.trainer.cli:entry"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
