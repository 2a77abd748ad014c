"""What this CPU offers for inference: the instruction-set flags that decide whether int8 and bf16 are fast
and exact here, and the int8 weight scheme ONNX Runtime needs on a CPU with a given set of flags.

ONNX Runtime's x86 int8 GEMM (MLAS) multiplies uint8 activations by int8 weights ("u8s8"). With VNNI
(``vpdpbusd``) or AMX the products are summed in 32 bits. Without them (AVX2, AVX-512 without VNNI) it uses
``vpmaddubsw``, which adds two u8×s8 products into a *saturating* int16: two 255 × 127 products overflow it.
On breast-cancer-mlp under QEMU's Haswell CPU (AVX2, no VNNI), full-range weights moved the logits by 5.27 %
of the largest, 7-bit weights (``reduce_range``, whose pair sum cannot overflow) by 1.27 %, as on a VNNI CPU
(benchmarks/results/int8-cpu.md; docs/architecture.md §7). So a variant gets 7-bit weights
unless it is made for a CPU whose int8 units do not saturate."""

from __future__ import annotations

import logging
import platform
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

CPUINFO = Path("/proc/cpuinfo")
# The instruction sets that decide whether int8 and bf16 are fast here (VNNI, AVX-512 BF16, AMX).
FEATURES = ("avx2", "avx512f", "avx_vnni", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
# The int8 dot-product units that accumulate u8×s8 in 32 bits, so full-range int8 weights cannot saturate.
EXACT_INT8 = frozenset({"avx_vnni", "avx512_vnni", "amx_int8"})
# The saturating u8×s8 pair sum (``vpmaddubsw``) is x86's; Arm's int8 dot products (NEON / SVE ``sdot``)
# accumulate in 32 bits, so elsewhere full-range weights are safe whatever flags /proc/cpuinfo lists.
X86_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686"})


def saturating_cpu(features: Iterable[str], machine: str) -> bool:
    """Whether ONNX Runtime's u8s8 int8 kernels can saturate on a CPU of ``machine`` (as ``platform.machine``
    names it) with ``features``: an x86 CPU without VNNI or AMX."""
    return machine.lower() in X86_MACHINES and not EXACT_INT8 & set(features)


def cpu_field(name: str) -> str | None:
    """A field of the first processor in /proc/cpuinfo (Linux), or None."""
    try:
        for line in CPUINFO.read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == name and value.strip():
                return value.strip()
    except OSError:
        pass
    return None


def cpu_features() -> list[str]:
    """The flags of :data:`FEATURES` this CPU has, in that order (empty where /proc/cpuinfo is missing)."""
    present = set((cpu_field("flags") or "").split())
    return [flag for flag in FEATURES if flag in present]


@dataclass(frozen=True)
class Int8Scheme:
    """How ONNX Runtime int8 weights are made for a CPU: the weight type and whether they use 7 bits."""

    weight_type: str  # "int8" (u8s8 kernels, the fastest on x86)
    reduce_range: bool  # 7-bit weights: no int16 saturation on CPUs without VNNI / AMX
    cpu_features: tuple[str, ...]  # the flags it was chosen for, recorded in variant.json

    def params(self) -> dict[str, object]:
        return {
            "weight_type": self.weight_type,
            "reduce_range": self.reduce_range,
            "cpu_features": list(self.cpu_features),
        }


def int8_scheme(features: Iterable[str], machine: str | None = None) -> Int8Scheme:
    """The int8 scheme for a CPU with ``features`` (flags as /proc/cpuinfo spells them) of ``machine`` (this
    one's by default). 7-bit weights where the kernels can saturate (x86 without VNNI / AMX), which keep the
    fast u8s8 kernels (uint8 weights would avoid saturation too, through slower kernels); full range
    elsewhere."""
    flags = tuple(features)
    reduce_range = saturating_cpu(flags, platform.machine() if machine is None else machine)
    return Int8Scheme("int8", reduce_range=reduce_range, cpu_features=flags)


def saturates_here(params: Mapping[str, object], features: Iterable[str], machine: str | None = None) -> bool:
    """Whether an ONNX int8 variant with these ``variant.json`` params can saturate on a CPU with
    ``features``: full-range int8 weights (variants made before ``reduce_range`` was recorded have them) on a
    CPU whose kernels can saturate (``saturating_cpu``; ``machine`` is this one's by default)."""
    full_range = params.get("weight_type") == "int8" and not params.get("reduce_range", False)
    return full_range and saturating_cpu(features, platform.machine() if machine is None else machine)


def warn_if_saturates(where: str, params: Mapping[str, object]) -> None:
    """Log a warning when the int8 variant at ``where`` was made for a CPU with VNNI / AMX and runs on one
    without: its outputs may differ from what its gate measured."""
    if saturates_here(params, cpu_features()):
        recorded = params.get("cpu_features")
        made_for = (
            ", ".join(map(str, recorded)) if isinstance(recorded, list) and recorded else "not recorded"
        )
        logger.warning(
            "%s: int8 weights of full range (made for a CPU with %s); this CPU has no VNNI / AMX, where ONNX "
            "Runtime's int8 kernels can saturate and move the outputs; quantize the variant again on this "
            "machine",
            where,
            made_for,
        )
