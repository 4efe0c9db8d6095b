"""The native bf16 GEMV (csrc/gemv_bf16.cpp) against float64 matmul, on every loop it has."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from splitserve.model import native, native_gemv
from splitserve.model.layers import PackedLinear
from tests.model.conftest import TinyModels
from tests.model.helpers import (
    bf16_runner,
    greedy_decode_error,
    hf_bf16_model,
    random_ids,
)

needs_gemv = pytest.mark.skipif(native_gemv.load() is None, reason="GEMV library unavailable")
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(native._compiler() is None or "0" in (os.environ.get("SPLITSERVE_NATIVE"),
                                                           os.environ.get("SPLITSERVE_GEMV")),
                    reason="no C++ compiler, or native kernels switched off")
def test_gemv_library_builds_here() -> None:
    assert native_gemv.load() is not None, "GEMV library failed to build (see the warning)"
    assert native_gemv.max_rows() >= 0


def check_against_float64(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
                          y: torch.Tensor) -> None:
    ref = x.double() @ w.double().T
    if b is not None:
        ref = ref + b.double()
    # one bf16 rounding of the result, plus float32 summation error over K products
    scale = x.double().abs() @ w.double().abs().T
    tol = ref.abs() * 2.0**-8 + scale * 1e-5 + 1e-30
    assert y.dtype == torch.bfloat16 and y.shape == ref.shape
    err = (y.double() - ref).abs()
    assert bool((err <= tol).all()), f"max excess {(err - tol).max().item()}"


# K, N: multiples of the 32-wide k step and 16-row AMX block, and not
SHAPES = [(64, 48), (96, 40), (70, 33), (31, 17), (768, 37), (1, 5)]


@needs_gemv
@pytest.mark.parametrize("path", ["auto", "generic", "avx512", "amx"])
@pytest.mark.parametrize("k,n", SHAPES)
@pytest.mark.parametrize("bias", [False, True])
def test_gemv_matches_float64_matmul(path: str, k: int, n: int, bias: bool) -> None:
    gen = torch.Generator().manual_seed(k * 1000 + n)
    w = torch.randn(n, k, generator=gen).to(torch.bfloat16)
    b = torch.randn(n, generator=gen).to(torch.bfloat16) if bias else None
    for m in (*range(1, 9), 16):
        x = torch.randn(m, k, generator=gen).to(torch.bfloat16)
        check_against_float64(x, w, b, native_gemv.gemv(x, w, b, path=path))


@needs_gemv
@pytest.mark.parametrize("path", ["auto", "avx512", "amx"])
def test_gemv_reads_strided_rows_and_leaves_input_alone(path: str) -> None:
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(64, 96, generator=gen).to(torch.bfloat16)
    wide = torch.randn(5, 200, generator=gen).to(torch.bfloat16)
    x = wide[:, 40:136]  # rows 200 apart
    before = wide.clone()
    check_against_float64(x, w, None, native_gemv.gemv(x, w, path=path))
    assert torch.equal(wide, before)


@needs_gemv
def test_gemv_rejects_bad_inputs() -> None:
    w = torch.zeros(8, 16, dtype=torch.bfloat16)
    x = torch.zeros(2, 16, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="x must be"):
        native_gemv.gemv(x.float(), w)
    with pytest.raises(ValueError, match="weight must be"):
        native_gemv.gemv(x, torch.zeros(8, 15, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="weight must be"):
        native_gemv.gemv(x, torch.zeros(16, 8, dtype=torch.bfloat16).T)
    with pytest.raises(ValueError, match="bias must be"):
        native_gemv.gemv(x, w, torch.zeros(7, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="path must be"):
        native_gemv.gemv(x, w, path="fast")


@pytest.mark.skipif(not torch.backends.mkldnn.is_available()
                    or not torch.ops.mkldnn._is_mkldnn_bf16_supported(),
                    reason="no oneDNN bf16 GEMM on this CPU")
def test_packed_linear_runs_few_rows_on_the_gemv_and_many_on_onednn(
        monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(2)
    linear = torch.nn.Linear(96, 80, bias=True).to(torch.bfloat16).requires_grad_(False)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(80, 96, generator=gen))
        linear.bias.copy_(torch.randn(80, generator=gen))
    calls: list[int] = []
    real_bind = native_gemv.bind

    def counting_bind(*args: object, **kwargs: object) -> object:
        run = real_bind(*args, **kwargs)  # type: ignore[arg-type]
        return lambda x: calls.append(x.shape[0]) or run(x)

    monkeypatch.setattr(native_gemv, "bind", counting_bind)
    packed = PackedLinear(linear, batch_size_hint=64)
    max_rows = native_gemv.max_rows()
    for m in (1, 2, 3, 16, 17, 40):
        x = torch.randn(m, 96, generator=gen).to(torch.bfloat16)
        check_against_float64(x, linear.weight, linear.bias, packed(x))
        torch.testing.assert_close(packed(x), F.linear(x, linear.weight, linear.bias),
                                   atol=0.05, rtol=2**-7)
    assert calls == [m for m in (1, 2, 3, 16, 17, 40) for _ in range(2) if m <= max_rows]


@pytest.mark.skipif(native._compiler() is None or sys.platform != "linux"
                    or platform.machine() not in ("x86_64", "AMD64"),
                    reason="needs a C++ compiler on x86-64 Linux")
@pytest.mark.parametrize("march", ["x86-64-v3", "skylake-avx512"])
def test_builds_and_stays_correct_without_avx512_bf16(tmp_path: Path, march: str) -> None:
    """A CPU without AVX-512 BF16: the library still builds, says so (max_rows 0, so
    PackedLinear keeps oneDNN) and its portable loop is right. Built with -march=`march`
    through a compiler wrapper, in a fresh cache, in a subprocess."""
    cxx = native._compiler()
    wrapper = tmp_path / "cxx"
    wrapper.write_text(f'#!/bin/sh\nfor a; do shift; [ "$a" = -march=native ] && '
                       f'a=-march={march}; set -- "$@" "$a"; done\nexec {cxx} "$@"\n')
    wrapper.chmod(0o755)
    script = textwrap.dedent("""
        import torch
        from splitserve.model import native_gemv
        assert native_gemv.load() is not None
        assert native_gemv.max_rows() == 0 and not native_gemv.fast_available()
        gen = torch.Generator().manual_seed(3)
        w = torch.randn(37, 70, generator=gen).to(torch.bfloat16)
        b = torch.randn(37, generator=gen).to(torch.bfloat16)
        x = torch.randn(3, 70, generator=gen).to(torch.bfloat16)
        for path in ("auto", "avx512", "amx"):
            y = native_gemv.gemv(x, w, b, path=path)
            ref = x.double() @ w.double().T + b.double()
            tol = ref.abs() * 2.0**-8 + (x.double().abs() @ w.double().abs().T) * 1e-5
            assert bool(((y.double() - ref).abs() <= tol).all()), path
        print("ok")
    """)
    env = {**os.environ, "CXX": str(wrapper), "SPLITSERVE_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": str(REPO)}
    env.pop("SPLITSERVE_NATIVE", None)
    env.pop("SPLITSERVE_GEMV", None)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


@needs_gemv
def test_bound_gemv_matches_and_checks_its_input() -> None:
    gen = torch.Generator().manual_seed(4)
    w = torch.randn(40, 96, generator=gen).to(torch.bfloat16)
    b = torch.randn(40, generator=gen).to(torch.bfloat16)
    run = native_gemv.bind(w, b)
    for m in (1, 3, 16):
        x = torch.randn(m, 96, generator=gen).to(torch.bfloat16)
        check_against_float64(x, w, b, run(x))
    with pytest.raises(ValueError, match="x must be"):
        run(torch.zeros(2, 95, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="x must be"):
        run(torch.zeros(2, 96))
    with pytest.raises(ValueError, match="weight must be"):
        native_gemv.bind(w.T)
    with pytest.raises(ValueError, match="bias must be"):
        native_gemv.bind(w, b[:39])


def test_hugepage_copies_are_equal_aligned_and_independent() -> None:
    gen = torch.Generator().manual_seed(5)
    tensors = [torch.randn(3, 7, generator=gen).to(torch.bfloat16),
               torch.randn(5, generator=gen), torch.randn(64, 33, generator=gen)]
    copies = native_gemv.hugepage_copies(tensors)
    for t, c in zip(tensors, copies, strict=True):
        assert torch.equal(t, c) and c.dtype == t.dtype and c.is_contiguous()
        assert c.data_ptr() % 64 == 0 and c.data_ptr() != t.data_ptr()
    copies[0].zero_()  # no two copies overlap, none aliases its source
    assert torch.equal(copies[1], tensors[1]) and torch.equal(copies[2], tensors[2])
    assert bool(tensors[0].ne(0).any())
    assert native_gemv.hugepage_copies([]) == []


@needs_gemv
@pytest.mark.parametrize("path", ["auto", "avx512", "amx", "generic"])
def test_gemv_with_two_threads_matches(path: str) -> None:
    gen = torch.Generator().manual_seed(6)
    w = torch.randn(200, 96, generator=gen).to(torch.bfloat16)
    b = torch.randn(200, generator=gen).to(torch.bfloat16)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for m in (1, 4, 9):
            x = torch.randn(m, 96, generator=gen).to(torch.bfloat16)
            check_against_float64(x, w, b, native_gemv.gemv(x, w, b, path=path))
    finally:
        torch.set_num_threads(threads)


@needs_gemv
@pytest.mark.parametrize("path", ["auto", "generic", "avx512", "amx"])
@pytest.mark.parametrize("k,dim", [(64, 48), (96, 20), (70, 9), (768, 64)])
@pytest.mark.parametrize("bias", [False, True])
def test_gemv_silu_mul_rounds_as_transformers(path: str, k: int, dim: int, bias: bool) -> None:
    """silu(gate) * up with the bf16 roundings of transformers' eager MLP: each of gate and
    up rounded to bf16 by its own Linear, silu rounded, the product rounded."""
    gen = torch.Generator().manual_seed(k + dim)
    torch.manual_seed(k + dim)  # the Linears' initialisation
    gate = torch.nn.Linear(k, dim, bias=bias).to(torch.bfloat16).requires_grad_(False)
    up = torch.nn.Linear(k, dim, bias=bias).to(torch.bfloat16).requires_grad_(False)
    w = torch.cat([gate.weight, up.weight])
    b = torch.cat([gate.bias, up.bias]) if bias else None
    for m in (1, 2, 3, 4, 5, 16):
        x = torch.randn(m, k, generator=gen).to(torch.bfloat16)
        got = native_gemv.gemv_silu_mul(x, w, b, path=path)
        # the same GEMV rows, activated by torch in transformers' order: the same bits but
        # where exp's last float32 bit tips a rounding (seen once in ~2400 cases), within a
        # bf16 ulp of each of the two roundings
        g_u = native_gemv.gemv(x, w, b, path=path)
        torch.testing.assert_close(got, F.silu(g_u[:, :dim]) * g_u[:, dim:], rtol=2**-6,
                                   atol=1e-6)
        # and within bf16 rounding of transformers' own modules
        want = F.silu(gate(x)) * up(x)
        torch.testing.assert_close(got, want, atol=0.02, rtol=0.02)


@needs_gemv
def test_gemv_silu_mul_rejects_an_odd_weight() -> None:
    with pytest.raises(ValueError, match="even row count"):
        native_gemv.gemv_silu_mul(torch.zeros(1, 8, dtype=torch.bfloat16),
                                  torch.zeros(7, 8, dtype=torch.bfloat16))


@pytest.mark.skipif(native_gemv.max_rows() == 0, reason="the GEMV does not run on this CPU")
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_packed_bf16_model_on_the_gemv_tracks_transformers(tiny: TinyModels, arch: str) -> None:
    """bf16 decode through the GEMV (and its fused silu), prefill through oneDNN: no
    further from transformers' bf16 eager model than the unpacked torch path is."""
    path = tiny.path(arch)
    hf_model = hf_bf16_model(path)
    prompts = [random_ids(n, seed=n) for n in (40, 9, 23)]
    errors = {}
    for packed in (False, True):
        runner = bf16_runner(path, use_native=packed, pack=packed)
        worst = greedy_decode_error(runner, hf_model, prompts, split_rows=True)
        errors[packed] = worst
    assert errors[True] <= 1.5 * errors[False] + 0.05, errors
