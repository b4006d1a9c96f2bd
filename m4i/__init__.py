"""m4i: a reproducible implementation of the M^4I membership-inference study."""
import os as _os

# Set before torch (and with it the OpenMP runtime) is first imported: importing any m4i module
# runs this first. Idle OpenMP workers then sleep instead of spinning: a 2-thread job on a busy
# machine otherwise burns CPU time waiting for cores that other jobs hold (measured: 7x the CPU
# time of an idle run for backbone pretraining). A value the user set wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_os.environ.setdefault("KMP_BLOCKTIME", "0")  # the same for Intel's OpenMP, where MKL brings it

__version__ = "0.1.0"
