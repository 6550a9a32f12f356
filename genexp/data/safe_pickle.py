"""Reading pickled numpy arrays without running the pickle's code.

A pickle names callables (`module.name`) that loading then calls: `os.system` as readily as
numpy's array constructor. The dataset files genexp reads as pickles (MNIST's mnist.pkl.gz,
CIFAR-10's python batches) hold only numpy arrays inside dicts, tuples, lists, numbers and
strings; those containers are pickle opcodes of their own, so an array needs only the three
numpy names below, and every other name is refused before anything is called.
"""
from __future__ import annotations

import pickle
from typing import IO, Any

import numpy as np


def _numpy_reconstruct():
    # numpy 2 moved numpy.core to numpy._core; pickles written by numpy 1 name the old module.
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class ArrayOnlyUnpickler(pickle.Unpickler):
    """Resolves only the names a pickled numpy array needs; anything else (os.system, eval,
    builtins) is refused before it can be called."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
    }

    def find_class(self, module: str, name: str) -> Any:
        factory = self.ALLOWED.get((module, name))
        if factory is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return factory()


# What reading a damaged or hostile pickle can raise (besides a refusal): truncation, bad opcodes,
# numpy rejecting a crafted array state.
READ_ERRORS = (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError, AttributeError, IndexError,
               KeyError, MemoryError, OverflowError)


def load_arrays(f: IO[bytes]) -> Any:
    """The object pickled in `f`, read by ArrayOnlyUnpickler. latin1: Python 2 pickles (both of
    these datasets) store an array's raw bytes as a str, which numpy reads back from latin1."""
    return ArrayOnlyUnpickler(f, encoding="latin1").load()
