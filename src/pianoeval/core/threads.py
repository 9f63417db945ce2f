"""Intra-op threads for inference: small tensor ops run on one thread.

PyTorch splits each op across its intra-op threads (2 on this machine) and waits for all of them at the
end of the op. On a machine shared with other jobs one of those threads is often descheduled, and every
op then waits for it: an op that takes microseconds takes milliseconds. Work made of many small ops (the
fold models' forward passes on one performance, TransKun's Viterbi loop) suffers most: on the 2-core
machine under load, a fold model's forward took 0.84 s on two threads and 0.026 s on one. Large matrix
products (TransKun's encoder) gain from a second core only when it is free: `threads_for_load` keeps
PyTorch's number of threads on an idle machine and uses one when the other cores are busy.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with `n` intra-op threads, then restore the previous number."""
    import torch  # here: threads_for_load serves code that runs before PyTorch is imported

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def one_thread(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` run with one intra-op thread (see the module docstring)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch_threads(1):
            return fn(*args, **kwargs)

    return wrapper


def threads_for_load(default: int) -> int:
    """`default` intra-op threads, or 1 when the cores are busy (1-minute load average >= cores).

    Under load, TransKun's encoder ran 30 s of audio in 61 s on one thread against 78-80 s on two (and
    10 fewer CPU seconds). An explicit OMP_NUM_THREADS is the user's choice and is kept.
    """
    if "OMP_NUM_THREADS" in os.environ or not hasattr(os, "getloadavg"):
        return default
    return 1 if os.getloadavg()[0] >= (os.cpu_count() or 1) else default
