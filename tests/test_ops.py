"""The fused ops of every backend against their pure-torch twins (fastgame.ops.reference).

* C++ CPU ops: always where the extension is built (FASTGAME_REQUIRE_CPP=1 makes a missing
  extension a failure, as CI wants);
* Triton: under the interpreter (TRITON_INTERPRET=1, set here when there is no GPU) on small
  shapes, or compiled on a GPU;
* CUDA and Triton on a GPU: behind the ``gpu`` marker (bench/gpu_check.sh runs them).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

if not torch.cuda.is_available():  # must precede the first import of the Triton kernels
    os.environ.setdefault("TRITON_INTERPRET", "1")

import fastgame  # noqa: E402
from fastgame import ops  # noqa: E402
from fastgame.ops import _ext, _triton, reference  # noqa: E402
from fastgame.ops.selfcheck import TOLERANCES  # noqa: E402  (the doctor reads the same table)
from tests.helpers import flat  # noqa: E402

REQUIRE_CPP = os.environ.get("FASTGAME_REQUIRE_CPP", "") not in ("", "0")
HAVE_CUDA = torch.cuda.is_available()
SMALL = [1, 7, 1023]
ALL_SIZES = SMALL + [2**20 + 3]
DTYPES = [torch.float32, torch.float64]


def _backend_params():
    """(backend, device, sizes) cases with their skip / gpu marks."""
    cpp_missing = _ext.CPP_ERROR is not None and not REQUIRE_CPP
    triton_why = _triton.error()
    gpu = [pytest.mark.gpu, pytest.mark.skipif(not HAVE_CUDA, reason="needs a CUDA GPU")]
    return [
        pytest.param("cpp", "cpu", ALL_SIZES, id="cpp",
                     marks=pytest.mark.skipif(cpp_missing, reason=f"C++ ops: {_ext.CPP_ERROR}")),
        pytest.param("triton", "cpu", SMALL, id="triton-interpreter",
                     marks=pytest.mark.skipif(bool(triton_why) or HAVE_CUDA,
                                              reason=triton_why or "a GPU runs the compiled Triton tests")),
        pytest.param("cuda", "cuda", ALL_SIZES, id="cuda", marks=gpu),
        pytest.param("triton", "cuda", ALL_SIZES, id="triton-gpu",
                     marks=gpu + [pytest.mark.skipif(bool(triton_why), reason=str(triton_why))]),
    ]


BACKENDS = _backend_params()


@pytest.fixture
def impl(request):
    """The backend's ops, after checking it can run on its device."""
    name, device = request.param[:2]
    backend = fastgame.backends()[name]
    why = backend.serves(torch.device(device))
    if why:
        pytest.fail(f"backend {name} on {device} unavailable: {why}")
    return backend.ops


def cases(fn):
    """Parametrize a test over backend x size x dtype (sizes per backend)."""
    params = []
    for p in BACKENDS:
        name, device, sizes = p.values
        for n in sizes:
            for dtype in DTYPES:
                params.append(pytest.param((name, device), n, dtype, marks=p.marks,
                                           id=f"{p.id}-{n}-{str(dtype)[6:]}"))
    return pytest.mark.parametrize("impl, n, dtype", params, indirect=["impl"])(fn)


def assert_vec(actual, expected, dtype):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    scale = expected.abs().max().item() if expected.numel() else 0.0
    tol = TOLERANCES[dtype]
    torch.testing.assert_close(actual, expected, rtol=tol.rtol, atol=tol.rtol * scale + tol.atol)


def assert_dot(actual, a, b, dtype):
    """A reduction against the float64 truth, to the accuracy of its dtype."""
    assert actual.dim() == 0 and actual.dtype == dtype
    exact = torch.dot(a.double(), b.double())
    bound = (a.double().abs() * b.double().abs()).sum()
    assert abs(actual.double().item() - exact.item()) <= TOLERANCES[dtype].dot_rtol * bound.item() + 1e-300


def _vecs(k, n, dtype, device, seed=0):
    gen = torch.Generator().manual_seed(seed + n)
    return [torch.randn(n, generator=gen, dtype=dtype).to(device) for _ in range(k)]


# ---- the ops, one test each -----------------------------------------------------------------

@cases
@pytest.mark.parametrize("scalar_dtype", [torch.float64, torch.float32])
def test_precondition(impl, n, dtype, scalar_dtype, request):
    device = request.node.callspec.params["impl"][1]
    g, v = _vecs(2, n, dtype, device)
    v = v.abs()
    v[0] = 0.0
    g[0] = 0.0  # eta = scale / eps there
    lr = torch.tensor(2e-3, dtype=scalar_dtype, device=device)
    step = torch.tensor(7.0, dtype=scalar_dtype, device=device)
    v_before = v.clone()
    got = impl.precondition(g, v, lr, step, 0.99, 1e-5)
    want = reference.precondition(g, v, lr, step, 0.99, 1e-5)
    assert torch.equal(v, v_before), "square_avg must not be modified"
    for a, b in zip(got, want):
        assert_vec(a, b, dtype)


@cases
@pytest.mark.parametrize("scalar_eta", [False, True], ids=["vector_eta", "scalar_eta"])
def test_cg_matvec(impl, n, dtype, scalar_eta, request):
    device = request.node.callspec.params["impl"][1]
    p, t, s = _vecs(3, n, dtype, device)
    s = torch.tensor(0.3, dtype=dtype, device=device) if scalar_eta else s.abs()
    ap, pap = impl.cg_matvec(p, s, t)
    ap_ref, _ = reference.cg_matvec(p, s, t)
    assert_vec(ap, ap_ref, dtype)
    assert_dot(pap, p, ap_ref, dtype)


@cases
@pytest.mark.parametrize("m_shift", [0, 5], ids=["same_size", "other_size"])
def test_cg_step(impl, n, dtype, m_shift, request):
    device = request.node.callspec.params["impl"][1]
    w, r, p, ap = _vecs(4, n, dtype, device)
    u, q = _vecs(2, n + m_shift, dtype, device, seed=1)
    rr, pap = torch.dot(r, r), torch.dot(p, ap).abs() + 1
    mine = [x.clone() for x in (w, u, r)]
    ref = [x.clone() for x in (w, u, r)]
    rr_new = impl.cg_step_(*mine, p, q, ap, rr, pap)
    reference.cg_step_(*ref, p, q, ap, rr, pap)
    for a, b in zip(mine, ref):
        assert_vec(a, b, dtype)
    assert_dot(rr_new, ref[2], ref[2], dtype)


@cases
@pytest.mark.parametrize("scalar_eta", [False, True], ids=["vector_eta", "scalar_eta"])
def test_cg_direction(impl, n, dtype, scalar_eta, request):
    device = request.node.callspec.params["impl"][1]
    p, r, s = _vecs(3, n, dtype, device)
    s = torch.tensor(0.7, dtype=dtype, device=device) if scalar_eta else s.abs()
    rr_new, rr = torch.tensor(0.5, dtype=dtype, device=device), torch.tensor(2.0, dtype=dtype, device=device)
    p1, p2 = p.clone(), p.clone()
    sp = impl.cg_direction_(p1, r, rr_new, rr, s)
    sp_ref = reference.cg_direction_(p2, r, rr_new, rr, s)
    assert_vec(p1, p2, dtype)
    assert_vec(sp, sp_ref, dtype)


# ---- guards at exact convergence ------------------------------------------------------------

def _small_cases(fn):
    params = []
    for p in BACKENDS:
        name, device, _ = p.values
        for dtype in DTYPES:
            params.append(pytest.param((name, device), dtype, marks=p.marks, id=f"{p.id}-{str(dtype)[6:]}"))
    return pytest.mark.parametrize("impl, dtype", params, indirect=["impl"])(fn)


@_small_cases
def test_cg_step_guard_zero_over_zero(impl, dtype, request):
    """rr = pAp = 0 (converged exactly): alpha is 0, nothing moves, no NaN."""
    device = request.node.callspec.params["impl"][1]
    n = 37
    w, p, q = _vecs(3, n, dtype, device)
    u = _vecs(1, n, dtype, device, seed=4)[0]
    r, ap = torch.zeros(n, dtype=dtype, device=device), torch.zeros(n, dtype=dtype, device=device)
    zero = torch.zeros((), dtype=dtype, device=device)
    w0, u0 = w.clone(), u.clone()
    rr_new = impl.cg_step_(w, u, r, p, q, ap, zero, zero.clone())
    assert rr_new.item() == 0.0
    assert torch.equal(w, w0) and torch.equal(u, u0) and torch.equal(r, torch.zeros_like(r))


@_small_cases
def test_cg_step_masked_rr_zero(impl, dtype, request):
    """The masked solver passes rr = 0 with pAp != 0 once converged: alpha is 0."""
    device = request.node.callspec.params["impl"][1]
    w, u, r, p, q, ap = _vecs(6, 19, dtype, device)
    before = [x.clone() for x in (w, u, r)]
    rr_new = impl.cg_step_(w, u, r, p, q, ap, torch.zeros((), dtype=dtype, device=device),
                           torch.tensor(3.0, dtype=dtype, device=device))
    for a, b in zip((w, u, r), before):
        assert torch.equal(a, b)
    assert_dot(rr_new, r, r, dtype)


@_small_cases
def test_cg_direction_guard_zero_over_zero(impl, dtype, request):
    """rr = 0: beta is 0, so p = r, and no NaN."""
    device = request.node.callspec.params["impl"][1]
    p, r, s = _vecs(3, 23, dtype, device)
    zero = torch.zeros((), dtype=dtype, device=device)
    sp = impl.cg_direction_(p, r, zero, zero.clone(), s)
    assert torch.equal(p, r)
    assert_vec(sp, s * r, dtype)
    assert torch.isfinite(sp).all()


# ---- unaligned views (the CUDA kernels fall back from 16-byte accesses) ---------------------

@_small_cases
def test_unaligned_views(impl, dtype, request):
    device = request.node.callspec.params["impl"][1]
    n = 1029
    buf = _vecs(1, 6 * (n + 1), dtype, device, seed=9)[0]
    w, u, r, p, q, ap = (buf[i * (n + 1) + 1: i * (n + 1) + 1 + n] for i in range(6))
    rr, pap = torch.tensor(1.5, dtype=dtype, device=device), torch.tensor(2.5, dtype=dtype, device=device)
    ref = [x.clone() for x in (w, u, r)]
    rr_new = impl.cg_step_(w, u, r, p, q, ap, rr, pap)
    reference.cg_step_(*ref, p.clone(), q.clone(), ap.clone(), rr, pap)
    for a, b in zip((w, u, r), ref):
        assert_vec(a, b, dtype)
    assert_dot(rr_new, ref[2], ref[2], dtype)
    s = p.abs()
    ap2, pap2 = impl.cg_matvec(p, s, q)
    assert_vec(ap2, reference.cg_matvec(p, s, q)[0], dtype)


# ---- torch.library registration --------------------------------------------------------------

def _opcheck_args(device, dtype):
    g, v, w, u, r, p, q, ap = _vecs(8, 33, dtype, device)
    one = torch.tensor(1.0, dtype=dtype, device=device)
    lr = torch.tensor(1e-3, dtype=torch.float64, device=device)
    return {
        "precondition": (g, v.abs(), lr, torch.tensor(2.0, dtype=torch.float64, device=device), 0.99, 1e-5),
        "cg_matvec": (p, v.abs(), q),
        "cg_step": (w, u, r, p, q, ap, one, one * 2),
        "cg_direction": (p, r, one, one * 2, v.abs()),
    }


@pytest.mark.parametrize("op", ["precondition", "cg_matvec", "cg_step", "cg_direction"])
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not HAVE_CUDA, reason="needs a CUDA GPU")])])
def test_opcheck_compiled_ops(op, device):
    if _ext.CPP_ERROR and not REQUIRE_CPP:
        pytest.skip(f"C++ ops: {_ext.CPP_ERROR}")
    if device == "cuda" and _ext.CUDA_ERROR:
        pytest.fail(f"CUDA ops: {_ext.CUDA_ERROR}")
    torch.library.opcheck(getattr(torch.ops.fastgame, op).default, _opcheck_args(device, torch.float64)[op])


@pytest.mark.parametrize("op", ["precondition", "cg_matvec", "cg_step", "cg_direction"])
def test_opcheck_triton_ops(op):
    if _triton.error():
        pytest.skip(_triton.error())
    _triton.kernels()
    device = "cuda" if HAVE_CUDA else "cpu"
    # The interpreter's kernels are plain Python functions that wrap_triton cannot trace, so
    # the fake-tensor checks need compiled kernels (a GPU).
    kw = {} if HAVE_CUDA else {"test_utils": ("test_schema", "test_autograd_registration")}
    torch.library.opcheck(getattr(torch.ops.fastgame, f"triton_{op}").default,
                          _opcheck_args(device, torch.float32)[op], **kw)


# ---- dispatch ---------------------------------------------------------------------------------

@pytest.fixture
def restore_backend():
    old = fastgame.get_backend()
    yield
    ops._set(old, check=False)


def test_backends_report():
    table = fastgame.backends()
    assert list(table) == ["torch", "cpp", "cuda", "triton"]
    assert table["torch"].available and table["torch"].ops is reference
    for name, backend in table.items():
        assert backend.name == name
        assert backend.devices and all(isinstance(d, str) for d in backend.devices)
        assert all(callable(getattr(backend.ops, op)) for op in ops.OPS)
        assert backend.available == (backend.reason is None)
        text = str(backend)
        assert text.startswith("available (") if backend.available else text == f"unavailable: {backend.reason}"
    assert table["cpp"].devices == ("cpu",) and table["cuda"].devices == ("cuda",)


def test_backend_serves_devices():
    table = fastgame.backends()
    assert table["torch"].serves(torch.device("cpu")) is None
    assert table["torch"].serves(torch.device("meta")) is None
    assert table["cuda"].serves(torch.device("cpu"))  # unavailable here, or CPU tensors
    if table["cpp"].available:
        assert table["cpp"].serves(torch.device("cpu")) is None
        assert "not cuda" in table["cpp"].serves(torch.device("cuda"))


def test_kernel_modules_follow_the_interface():
    """Every backend module's ops carry the twins' signatures and docstrings."""
    import inspect
    for backend in fastgame.backends().values():
        for op in ops.OPS:
            fn, twin = getattr(backend.ops, op), getattr(reference, op)
            assert inspect.signature(fn) == inspect.signature(twin) and fn.__doc__ == twin.__doc__
    assert inspect.signature(ops.cg_step_) == inspect.signature(reference.cg_step_)


def test_ops_are_declared_once_and_written_out_at_the_dispatch_point():
    """Each op is a ``def`` in two places a reader and an IDE find: its twin (with its schema,
    in the op list's order) and the dispatch point (``Ops``); the kernel backends' op tables are
    built from that list, and nothing is made with a ``globals()`` update."""
    import ast
    import inspect
    from fastgame.ops.interface import SCHEMAS
    names = tuple(s.name for s in SCHEMAS)
    assert ops.OPS == names and names == ("precondition", "cg_matvec", "cg_step_", "cg_direction_")
    twins = [n.name for n in ast.parse(inspect.getsource(reference)).body
             if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")]
    assert tuple(twins) == names
    assert all(getattr(reference, name).op_schema is schema for name, schema in zip(names, SCHEMAS))
    methods = next(n for n in ast.parse(inspect.getsource(ops)).body if isinstance(n, ast.ClassDef) and n.name == "Ops")
    assert tuple(n.name for n in methods.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")) == names
    for module in (ops, _ext, _triton, fastgame.ops.interface):
        assert "globals()" not in inspect.getsource(module)
    for name in names:  # the module's functions are the process-wide Ops's
        assert getattr(ops, name) == getattr(ops.dispatch(None), name)
        assert inspect.signature(getattr(ops.dispatch("torch"), name)) == inspect.signature(getattr(reference, name))
    for table in (_ext.OPS, _triton.OPS):
        assert set(names) <= set(vars(table)), table


def test_a_declaration_must_match_its_twin():
    """A schema or fake whose name or arguments are not the twin's is refused at import."""
    from fastgame.ops.schemas import declare

    def cg_scale(p, s):
        return p * s
    with pytest.raises(ValueError, match="must be named 'cg_scale'"):
        declare("cg_mul(Tensor p, Tensor s) -> Tensor", lambda p, s: p)(cg_scale)
    with pytest.raises(ValueError, match=r"its schema takes \('p', 't'\)"):
        declare("cg_scale(Tensor p, Tensor t) -> Tensor", lambda p, s: p)(cg_scale)
    with pytest.raises(ValueError, match=r"its fake \('p',\)"):
        declare("cg_scale(Tensor p, Tensor s) -> Tensor", lambda p: p)(cg_scale)
    assert declare("cg_scale(Tensor(a!) p, Tensor s) -> Tensor", lambda p, s: p)(cg_scale).op_schema.mutates == ("p",)


def test_an_op_must_match_its_twin():
    from fastgame.ops.interface import op
    with pytest.raises(ValueError, match="not a fused op"):
        op(lambda x: x)

    def cg_matvec(p, sqrt_eta):  # a parameter short
        return p
    with pytest.raises(TypeError, match="differs from its twin cg_matvec"):
        op(cg_matvec)


def test_cpp_required_in_ci():
    if not REQUIRE_CPP:
        pytest.skip("FASTGAME_REQUIRE_CPP is not set")
    assert _ext.CPP_ERROR is None, _ext.CPP_ERROR
    assert fastgame.backends()["cpp"].available


def test_auto_picks_cpp_on_cpu(restore_backend):
    fastgame.set_backend("auto")
    x = torch.zeros(3)
    assert ops._impl(x) is (reference if _ext.CPP_ERROR else _ext.OPS)
    assert ops._impl(x.to(torch.bfloat16)) is reference  # kernels cover float32/float64 only


def test_forced_unavailable_backend_says_why(restore_backend):
    with pytest.raises(ValueError, match=r"unknown fastgame backend 'fortran'; choose one of .*'auto'.*'cpp'"):
        fastgame.set_backend("fortran")
    for name, backend in fastgame.backends().items():
        if not backend.available:
            with pytest.raises(RuntimeError, match=f"'{name}' is unavailable: {re.escape(backend.reason)}"):
                fastgame.set_backend(name)
    if _ext.CPP_ERROR is None:
        fastgame.set_backend("cpp")
        if HAVE_CUDA:
            with pytest.raises(RuntimeError, match="cannot run on cuda"):
                ops.cg_matvec(*[torch.ones(3, device="cuda")] * 3)
    fastgame.set_backend("torch")
    assert ops._impl(torch.zeros(3)) is reference


def test_dispatch_choice_is_per_call(restore_backend):
    """ops.dispatch(name) runs its own choice whatever the process-wide setting."""
    fastgame.set_backend("torch")
    x = torch.ones(5, dtype=torch.float64)
    assert ops.dispatch("auto").cg_matvec(x, x, x)[1].item() == 10.0
    assert ops.dispatch() is ops.dispatch(None) and repr(ops.dispatch("torch")) == "fastgame.ops.dispatch('torch')"
    if _ext.CPP_ERROR is None:
        assert ops._impl(x, "auto") is _ext.OPS and ops._impl(x) is reference
    with pytest.raises(ValueError, match="choose one of"):
        ops.dispatch("fortran")
    for name, backend in fastgame.backends().items():
        if not backend.available:
            with pytest.raises(RuntimeError, match=f"'{name}' is unavailable"):
                ops.dispatch(name)


def test_ops_take_keywords():
    x = torch.ones(3, dtype=torch.float64)
    ap, pap = ops.cg_matvec(p=x, sqrt_eta=x, t=x)
    assert torch.equal(ap, 2 * x) and pap.item() == 6.0


def _python_with_backend_env(code: str, backend: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter from the repository root with FASTGAME_BACKEND set."""
    env = dict(os.environ, FASTGAME_BACKEND=backend)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_env_var_forces_backend():
    code = ("import fastgame, torch\n"
            "print(fastgame.get_backend())\n"
            "try:\n    fastgame.ops.cg_matvec(torch.ones(2), torch.ones(2), torch.ones(2)); print('ran')\n"
            "except RuntimeError as e:\n    print('error', e)\n")
    out = _python_with_backend_env(code, "cuda")
    lines = out.stdout.splitlines()
    assert lines[0] == "cuda", out.stderr
    assert lines[1].startswith("error fastgame backend 'cuda' cannot run on cpu"), out.stdout


# ---- the ops declared once --------------------------------------------------------------------

def test_every_backend_table_follows_the_schema_list():
    """One list (ops.interface.SCHEMAS) names the ops of every backend, the compiled schemas
    and the Triton ops' mutated arguments."""
    from fastgame.ops.interface import SCHEMAS
    assert ops.OPS == tuple(s.name for s in SCHEMAS) and set(ops.OPS) <= set(ops.__all__)
    for backend in fastgame.backends().values():
        assert all(callable(getattr(backend.ops, s.name)) for s in SCHEMAS)
    assert [s.mutates for s in SCHEMAS] == [(), (), ("w", "u", "r"), ("p",)]
    if not _ext.CPP_ERROR:
        for s in SCHEMAS:
            registered = str(getattr(torch.ops.fastgame, s.registered).default._schema)
            assert registered == f"fastgame::{s.schema}"
    if not _triton.error():
        kernels = _triton.kernels()
        for s in SCHEMAS:
            assert getattr(kernels, s.registered) is not None
            schema = getattr(torch.ops.fastgame, f"triton_{s.registered}").default._schema
            assert [a.name for a in schema.arguments if a.alias_info and a.alias_info.is_write] == list(s.mutates)


def test_import_loads_nothing_and_reads_no_environment():
    """``import fastgame`` neither loads the compiled ops nor reads FASTGAME_BACKEND: both
    happen at the first backend query (a typo in the variable warns there, once)."""
    code = ("import sys, warnings, fastgame\n"
            "print('fastgame._C' in sys.modules, fastgame.ops._state._backend)\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    print(fastgame.get_backend(), fastgame.get_backend(), len(w), 'ignored' in str(w[0].message))\n")
    out = _python_with_backend_env(code, "fortran")
    assert out.stdout.splitlines() == ["False None", "auto auto 1 True"], out.stderr


def test_schemas_join_a_library_that_defines_them():
    """A build from before the schemas moved to Python defines them in C++: the same schemas are
    used as they are, different ones are a one-line 'stale build' error (fresh processes)."""
    from fastgame.ops.interface import SCHEMAS
    same = SCHEMAS[1].schema
    other = "cg_matvec(Tensor p, Tensor t) -> Tensor"
    code = ("import torch\nlib = torch.library.Library('fastgame', 'FRAGMENT')\nlib.define({!r})\n"
            "from fastgame.ops import schemas\nfrom fastgame.ops.interface import SCHEMAS\n"
            "try:\n    schemas.define(SCHEMAS); print('defined')\nexcept RuntimeError as e:\n    print('error', e)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outs = [subprocess.run([sys.executable, "-c", code.format(schema)], capture_output=True, text=True, timeout=120,
                           cwd=root).stdout.strip() for schema in (same, other)]
    assert outs[0] == "defined"
    assert outs[1].startswith("error a stale build defines 'fastgame::cg_matvec(Tensor p, Tensor t) -> Tensor'")


def _bad_operands(dtype=torch.float64):
    """(op, arguments, message) for one wrong operand of each kind of check."""
    v = lambda n=5: torch.ones(n, dtype=dtype)  # noqa: E731
    s = torch.tensor(1.0, dtype=dtype)
    lr = torch.tensor(1e-3, dtype=torch.float64)
    return [
        ("precondition", (v(), v(4), lr, lr, 0.9, 1e-8), "square_avg has 4 elements, expected 5"),
        ("precondition", (v(), v(), v(2), lr, 0.9, 1e-8), "lr must be a one-element"),
        ("cg_matvec", (v(), v(), v().float()), "t has dtype Float, expected Double"),
        ("cg_matvec", (v(), v(3), v()), "sqrt_eta has 3 elements, expected 5"),
        ("cg_matvec", (v(), v(), torch.ones(5, 2, dtype=dtype)[:, 0]), "t must be a contiguous 1-D tensor"),
        ("cg_step", (v(), v(3), v(), v(), v(4), v(), s, s), "q has 4 elements, expected 3"),
        ("cg_step", (v(), v(3), v(), v(), v(3), v(6), s, s), "ap has 6 elements, expected 5"),
        ("cg_step", (v(), v(3), v(), v(), v(3), v(), s, v(2)), "pap must be a one-element"),
        ("cg_direction", (v(), v(), v(2), s, s), "rr_new must be a one-element"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_operands())))
def test_compiled_ops_check_their_operands(case):
    """The one C++ check (csrc/fastgame.h) refuses each wrong operand with a message naming it,
    before anything is written."""
    if _ext.CPP_ERROR:
        pytest.skip(f"C++ ops: {_ext.CPP_ERROR}")
    op, args, message = _bad_operands()[case]
    before = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    with pytest.raises(RuntimeError, match=re.escape(f"fastgame: {message}")):
        getattr(torch.ops.fastgame, op).default(*args)
    assert all(not isinstance(a, torch.Tensor) or torch.equal(a, b) for a, b in zip(args, before))


# ---- the optimizers' numbers with each backend -------------------------------------------------

def _parity_backends():
    out = [pytest.param(("torch", "cpu"), id="torch")]
    for p in BACKENDS:
        name, device, _ = p.values
        out.append(pytest.param((name, device), marks=p.marks, id=p.id))
    return out


@pytest.mark.parametrize("cls", ["ACGD", "BCGD"])
@pytest.mark.parametrize("backend", _parity_backends())
def test_optimizer_parity_with_cgds(backend, cls, restore_backend):
    """fastgame with this backend against CGDs 0.4.5, float64, tight tolerance."""
    CGDs = pytest.importorskip("CGDs")
    import copy

    from bench.models import gan_loss, mlp_gan, ring_data
    name, device = backend
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        G, D = (m.to(device) for m in mlp_gan(width=16, depth=2, latent=4))
        G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
        gen = torch.Generator().manual_seed(3)
        batches = [(ring_data(32, gen).to(device), torch.randn(32, 4, generator=gen).to(device)) for _ in range(4)]
        kw = dict(lr_max=1e-2, lr_min=1e-2, tol=1e-14, atol=1e-30)
        ref = getattr(CGDs, cls)(max_params=D.parameters(), min_params=G.parameters(), **kw)
        fastgame.set_backend(name)
        ours = getattr(fastgame, cls)(max_params=D2.parameters(), min_params=G2.parameters(), cg_start="warm", **kw)
        for real, z in batches:
            ref.step(gan_loss(G, D, real, z))
            ours.step(gan_loss(G2, D2, real, z))
        assert ops._impl(next(D2.parameters())) is fastgame.backends()[name].ops
        a, b = flat(D, G), flat(D2, G2)
        assert ((a - b).norm() / a.norm()).item() <= 1e-8
    finally:
        torch.set_default_dtype(old)


# ---- GPU: the ops inside a CUDA graph ----------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_ops_capture_in_cuda_graph(backend):
    """All four ops captured in one graph and replayed give the eager torch numbers."""
    why = fastgame.backends()[backend].serves(torch.device("cuda"))
    if why:
        pytest.skip(why)
    impl = fastgame.backends()[backend].ops
    n, dev = 4099, "cuda"
    g, v, w, u, r, p, q, t = _vecs(8, n, torch.float32, dev)
    v = v.abs()
    lr = torch.tensor(1e-2, dtype=torch.float64, device=dev)
    step = torch.tensor(3.0, dtype=torch.float64, device=dev)
    rr = torch.dot(r, r)
    state = [x.clone() for x in (w, u, r, p)]
    ref = [x.clone() for x in (w, u, r, p)]

    def body(impl, w, u, r, p):
        _, _, se, _ = impl.precondition(g, v, lr, step, 0.99, 1e-5)
        ap, pap = impl.cg_matvec(p, se, t)
        rr_new = impl.cg_step_(w, u, r, p, q, ap, rr, pap)
        return impl.cg_direction_(p, r, rr_new, rr, se)

    for _ in range(2):  # warm up (Triton compiles) on a side stream, as graphs require
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            body(impl, *[x.clone() for x in state])
        torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = body(impl, *state)
    graph.replay()
    want = body(reference, *ref)
    torch.cuda.synchronize()
    for a, b in zip(state + [out], ref + [want]):
        assert_vec(a, b, torch.float32)
