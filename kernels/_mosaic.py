"""Mosaic GPU (Hopper) plumbing for the kernels, and a CPU emulation of the same kernel bodies.

A Mosaic kernel body is written once against the few operations of `Hopper`: TMA copies
between global and shared memory, barrier waits, warpgroup matmuls (wgmma, bf16/f16 operands,
float32 accumulation), register layouts. `Emulated` runs the same body through
``pallas_call(interpret=True)`` on any backend: copies become reads and writes, the matmul is
``jnp.dot`` with float32 accumulation, layouts are no-ops. So the test suite checks a kernel's
indexing, masking, pipelining order and math on CPU, and lowering it for CUDA checks the Mosaic
GPU side (layouts, tiling, swizzling) without a GPU. Races and speed need a GPU.

JAX's own Mosaic GPU interpreter cannot run these kernels yet (no transposed wgmma operands,
register operands, dynamic slot indices or layout casts), hence the emulation.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu
from jax.experimental.pallas import tpu as pltpu

TILE = 64  # rows of a warpgroup matmul tile, and the swizzled tile's columns (128 B of bf16)
DTYPES = (jnp.bfloat16, jnp.float16)  # the operand dtypes of wgmma used here
_SWIZZLE = 128
_GRID_NAMES = ("g0", "g1", "g2")


@dataclasses.dataclass(frozen=True)
class _Transposed:
    ref: Any  # a Pallas ref


class Hopper:
    """Mosaic GPU operations (sm_90a); everything here is traced inside a kernel body."""

    def smem(self, shape, dtype, swizzled: bool = True):
        if not swizzled:
            return plgpu.SMEM(shape, dtype)
        tiling = plgpu.TilingTransform((8, _SWIZZLE // jnp.dtype(dtype).itemsize))
        return plgpu.SMEM(shape, dtype, transforms=(tiling, plgpu.SwizzleTransform(_SWIZZLE)))

    def barriers(self, n: int = 1, copies: int = 1):
        """``n`` barriers, each completing when ``copies`` TMA copies have landed (every copy
        arrives once on its barrier)."""
        return plgpu.Barrier(num_arrivals=copies, num_barriers=n)

    def copy_in(self, src, dst, barrier):
        plgpu.copy_gmem_to_smem(src, dst, barrier)

    def wait(self, barrier):
        plgpu.barrier_wait(barrier)

    def t(self, ref):
        """A shared-memory operand read transposed by the matmul."""
        return plgpu.transpose_ref(ref, (1, 0))

    def matmul(self, a, b, shape):
        """a @ b as a [M, N] float32 array in the WGMMA layout; ``a`` is a shared-memory ref or
        a 16-bit array in registers, ``b`` a shared-memory ref."""

        def run(acc):
            plgpu.wgmma(acc, a, b)
            return acc[...]

        return pl.run_scoped(run, plgpu.ACC(shape, jnp.float32))

    def tile(self, x):
        return plgpu.layout_cast(x, plgpu.Layout.WGMMA)

    def rows(self, x):
        """A per-row vector of a WGMMA tile."""
        return plgpu.layout_cast(x, plgpu.Layout.WGMMA.reduce(1))

    def load_rows(self, ref):
        return plgpu.load(ref, (), layout=plgpu.Layout.WGMMA.reduce(1))

    def load_cols(self, ref):
        """A per-column vector of a WGMMA tile."""
        return plgpu.load(ref, (), layout=plgpu.Layout.WGMMA.reduce(0))

    def iota(self, shape, dim: int):
        return plgpu.broadcasted_iota(jnp.int32, shape, dim, layout=plgpu.Layout.WGMMA)

    def store(self, src, dst, add: bool = False):
        """Shared -> global; ``add`` accumulates into ``dst`` (a TMA reduction)."""
        plgpu.copy_smem_to_gmem(src, dst, reduction_op="add" if add else None)

    def commit(self):
        """Make register writes to shared memory visible to the TMA unit."""
        plgpu.commit_smem()

    def drain(self):
        """Wait until pending stores have read their shared-memory source."""
        plgpu.wait_smem_to_gmem(0, wait_read_only=True)

    def program_id(self, axis: int):
        return jax.lax.axis_index(_GRID_NAMES[axis])

    def call(self, body, *, grid, out_shape=(), scratch, accumulate: int = 0):
        """A kernel over ``grid`` running ``body(platform, *in_refs, *acc_refs, *out_refs,
        *scratch)`` with every operand in global memory (the body moves its tiles). The last
        ``accumulate`` inputs are initial values of buffers the kernel adds into; the call
        returns ``[*outputs, *accumulated]``."""

        def run(*args):
            split = len(args) - accumulate
            refs = [jax.new_ref(x) for x in args[split:]]  # aliased in and out of the kernel

            def kernel(*operands):
                pl.run_scoped(functools.partial(body, self, *operands), *scratch)

            outs = pl.kernel(
                kernel,
                out_type=_types(out_shape),
                mesh=plgpu.Mesh(grid=grid, grid_names=_GRID_NAMES[: len(grid)]),
                compiler_params=plgpu.CompilerParams(),
            )(*args[:split], *refs)
            return [*outs, *(r[...] for r in refs)]

        return run


class Emulated(Hopper):
    """The same kernel bodies in Pallas interpret mode, on any backend."""

    def smem(self, shape, dtype, swizzled: bool = True):
        return pltpu.VMEM(shape, dtype)

    def barriers(self, n: int = 1, copies: int = 1):
        return pltpu.SMEM((n,), jnp.int32)

    def copy_in(self, src, dst, barrier):
        dst[...] = src[...]

    def wait(self, barrier):
        pass

    def t(self, ref):
        return _Transposed(ref)

    def matmul(self, a, b, shape):
        def value(x):
            if isinstance(x, _Transposed):
                return x.ref[...].T
            return x if isinstance(x, jax.Array) else x[...]

        out = jnp.dot(value(a), value(b), preferred_element_type=jnp.float32)
        assert out.shape == tuple(shape), (out.shape, shape)
        return out

    def tile(self, x):
        return x

    rows = tile

    def load_rows(self, ref):
        return ref[...]

    load_cols = load_rows

    def iota(self, shape, dim: int):
        return jax.lax.broadcasted_iota(jnp.int32, shape, dim)

    def store(self, src, dst, add: bool = False):
        dst[...] = src[...] + dst[...] if add else src[...]

    def commit(self):
        pass

    def drain(self):
        pass

    def program_id(self, axis: int):
        return pl.program_id(axis)

    def call(self, body, *, grid, out_shape=(), scratch, accumulate: int = 0):
        def run(*args):
            n_in, n_out = len(args) - accumulate, len(out_shape)

            def kernel(*refs):
                # pallas_call passes inputs (aliased ones too), outputs, accumulators, scratch.
                ins, refs = refs[:n_in], refs[len(args) :]
                outs, accs, rest = (
                    refs[:n_out],
                    refs[n_out : n_out + accumulate],
                    refs[n_out + accumulate :],
                )
                body(self, *ins, *accs, *outs, *rest)

            accs = _types(args[n_in:])
            spec = pl.BlockSpec(memory_space=pl.ANY)
            return pl.pallas_call(
                kernel,
                grid=grid,
                out_shape=[*_types(out_shape), *accs],
                in_specs=[spec] * len(args),
                out_specs=[spec] * (len(out_shape) + accumulate),
                scratch_shapes=scratch,
                input_output_aliases={n_in + i: len(out_shape) + i for i in range(accumulate)},
                interpret=True,
            )(*args)

        return run


def _types(arrays):
    return [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in arrays]


def platform() -> Hopper:
    """The real kernels on a Hopper-or-newer GPU, the emulation off-GPU."""
    if jax.default_backend() != "gpu":
        return Emulated()
    device = jax.devices()[0]
    capability = getattr(device, "compute_capability", "0")
    if float(capability) < 9.0:
        raise ValueError(
            f"implementation='mosaic' needs a Hopper (sm_90) or newer GPU, this is "
            f"{device.device_kind} (compute capability {capability}): use 'triton' or 'xla'."
        )
    return Hopper()


def check_operands(name: str, x):
    """Mosaic kernels take 16-bit operands: say so naming the argument."""
    if x.dtype not in tuple(map(jnp.dtype, DTYPES)):
        raise TypeError(
            f"implementation='mosaic' takes bfloat16 or float16 `{name}` (wgmma operands), got "
            f"{x.dtype}: cast it, or use implementation='xla'."
        )


def round_up(n: int, multiple: int = TILE) -> int:
    return -(-n // multiple) * multiple


def stream(lo, hi, fetch, body, init, *, blocks: int):
    """``fori_loop`` over blocks [lo, hi) double-buffered in two shared-memory slots: blocks lo
    and lo + 1 are fetched up front and block j + 2 as soon as block j's slot is free.
    ``fetch(j, slot)`` starts the copies, ``body(j, slot, carry)`` waits for them and computes.
    ``blocks`` is the static number of blocks in the operand: a prefetch whose static index is
    past it is not even traced (its slice would be out of bounds, although never executed)."""
    for s in range(2):
        if isinstance(lo, int) and lo + s >= blocks:
            continue
        pl.when(lo + s < hi)(functools.partial(fetch, lo + s, s))

    def step(j, carry):
        slot = jax.lax.rem(jnp.int32(j - lo), jnp.int32(2))
        carry = body(j, slot, carry)
        pl.when(j + 2 < hi)(functools.partial(fetch, j + 2, slot))
        return carry

    return jax.lax.fori_loop(lo, hi, step, init)
