"""Compile headmap's Triton kernels for a GPU that is not here: Triton builds the PTX and runs its
bundled ``ptxas`` without a device, so CI catches what the interpreter does not (globals, types,
layouts), and the register use of each kernel can be read from the cubin."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from headmap.capture import triton_kernel as tk

_FLOATS = ("scale", "cap", "threshold")
_INDEX = ("KEY_LO", "KEY_HI", "TRACK", "SPECIAL")
_UNIT = {"sqd": 1, "skd": 1, "svd": 1}
_STRIDES = ("sqb", "sqh", "sqn", "skb", "skh", "skn", "svb", "svh", "svn")


def compile_kernel(fn, dtype: str, constants: dict, capability: int = 90, warps: int = 4):
    """``fn`` (a kernel of headmap.capture.triton_kernel) compiled for ``sm_<capability>`` with
    ``dtype`` ("fp32", "bf16", "fp16") queries, keys and values; ``constants`` are its constexprs."""
    mask = {0: "*fp32", 1: f"*{dtype}", 2: "*u8"}[constants.get("MASK_KIND", 0)]
    pointers = {
        "Q": dtype,
        "K": dtype,
        "V": dtype,
        "OUT": dtype,
        "SUMS": "fp32",
        "MAPS": "fp32",
        "MASK": mask[1:],
    }
    pointers |= dict.fromkeys(_INDEX, "i32")
    # As a launch specializes them: unit strides of the last dimension are constants, and pointers and
    # the other strides are multiples of 16 (what Triton checks at run time, for vector loads).
    given = {k: v for k, v in {**constants, **_UNIT}.items() if k in fn.arg_names}
    signature = {}
    for name in fn.arg_names:
        if name in given:
            signature[name] = "constexpr"
        elif name in pointers:
            signature[name] = "*" + pointers[name]
        else:
            signature[name] = "fp32" if name in _FLOATS else "i32"
    aligned = {
        (i,): [["tt.divisibility", 16]]
        for i, name in enumerate(fn.arg_names)
        if name not in given and (name in pointers or name in _STRIDES)
    }
    source = ASTSource(fn=fn, signature=signature, constexprs=given, attrs=aligned)
    return triton.compile(source, target=GPUTarget("cuda", capability, 32), options={"num_warps": warps})


def resource_usage(compiled) -> str:
    """ptxas's resource line of a compiled kernel: registers, spill stack, shared memory."""
    with tempfile.TemporaryDirectory() as folder:
        cubin = Path(folder) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        tool = Path(triton.__path__[0]) / "backends" / "nvidia" / "bin" / "cuobjdump"
        out = subprocess.run([str(tool), "--dump-resource-usage", str(cubin)], capture_output=True, text=True)
    return next((line.strip() for line in out.stdout.splitlines() if "REG:" in line), out.stdout.strip())


KERNELS = {"fused_stats": tk._fused_stats, "row_keys": tk._row_keys, "row_maps": tk._row_maps}


DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def constants(dtype: str, d: int, mask_kind: int, extras: bool) -> tuple[dict, int]:
    """The constexprs and warps the launcher uses for this case (its own tile choice)."""
    import torch

    block_m, block_n, warps = tk._blocks(
        getattr(torch, DTYPE_NAMES[dtype]), d, mask_kind != 0, interpreted=False
    )
    found = dict(
        REP=4, CAUSAL=True, WINDOWED=extras, SOFTCAP=extras, MASK_KIND=mask_kind, IEEE=dtype == "fp32",
        D=d, DV=d, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=d, BLOCK_DV=d,
    )  # fmt: skip
    return found, warps


def main() -> None:
    """Compile each case given as JSON ``[kernel, dtype, d, mask_kind, extras, capability]`` on the
    command line; print one JSON line of ptxas resource lines (or the error) per case."""
    import json
    import sys

    results = []
    for case in json.loads(sys.argv[1]):
        kernel, dtype, d, mask_kind, extras, capability = case
        found, warps = constants(dtype, d, mask_kind, extras)
        try:
            usage = resource_usage(compile_kernel(KERNELS[kernel], dtype, found, capability, warps))
        except Exception as exc:  # noqa: BLE001 - reported to the test, which fails with it
            usage = f"error: {type(exc).__name__}: {exc}"
        results.append([case, usage])
    print(json.dumps(results))


if __name__ == "__main__":
    main()
