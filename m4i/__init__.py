"""m4i: a reproducible implementation of the M^4I membership-inference study."""
import functools as _functools
import os as _os

# Set before torch (and with it the OpenMP runtime) is first imported: importing any m4i module
# runs this first. Idle OpenMP workers then sleep instead of spinning: a 2-thread job on a busy
# machine otherwise burns CPU time waiting for cores that other jobs hold (measured: 7x the CPU
# time of an idle run for backbone pretraining). A value the user set wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_os.environ.setdefault("KMP_BLOCKTIME", "0")  # the same for Intel's OpenMP, where MKL brings it

# The same code and seed give other bits on another CPU: torch's vectorised kernels, oneDNN (the
# LSTM, convolutions), MKL (torch's matrix products) and OpenBLAS (numpy, scikit-learn) each pick a
# code path by the CPU's instruction set, and the paths sum in different orders (measured: each of
# the four alone changes the bits of a captioner trained for ten steps, or of a numpy product).
# So the default study's numbers differed between machines although every run on one machine was
# byte-identical. On an x86-64 CPU with AVX2 and FMA all four are pinned to their AVX2 paths, so
# that a machine with AVX-512 computes what an AVX2 one does (for some speed). torch's, oneDNN's
# and OpenBLAS's pins select what they pick by themselves on an AVX2 CPU (checked bit for bit);
# MKL's is its conditional-numerical-reproducibility mode, which also leaves out the paths that
# depend on the CPU's maker or on memory alignment: on an AMD EPYC, MKL's own pick gave other
# ViT-GPT-2 captions and CLIP weights. A value the user set wins.
CPU_PINS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2",
            "OPENBLAS_CORETYPE": "Haswell"}


@_functools.lru_cache(maxsize=None)
def cpuinfo(key: str) -> str | None:
    """The value of the first ``key`` line of /proc/cpuinfo (``flags``, ``model name``), or None
    (no /proc: not Linux). Read once per key and process: provenance asks at every sidecar."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                name, sep, value = line.partition(":")
                if sep and name.strip() == key:
                    return value.strip()
    except OSError:
        return None
    return None


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``avx2``, ``avx512f``, ...); empty where /proc/cpuinfo has none."""
    return set((cpuinfo("flags") or "").split())


# Only on x86-64 CPUs with AVX2 and FMA (elsewhere, other CPUs or no /proc, nothing is pinned).
CPU_PINS_APPLY = {"avx2", "fma"} <= cpu_flags()
if CPU_PINS_APPLY:
    for _name, _value in CPU_PINS.items():
        _os.environ.setdefault(_name, _value)

__version__ = "0.1.0"
