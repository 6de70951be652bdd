"""Data-parallel training: the collectives liblift's distributed step calls back into.

liblift.so links no MPI library. `Communicator` turns three Python functions into the C
`lift_comm` callbacks; `MPICommunicator` implements them with mpi4py (Open MPI from Debian).
Run under mpirun with `python -m mpi4py`, so that an exception on one rank aborts every rank
instead of leaving them waiting in a collective:

    mpirun -n 2 python -m mpi4py examples/python/train_mpi.py --data train.h5
"""
from __future__ import annotations

import ctypes

import numpy as np

from ._lib import ALLGATHER_INT64, ALLGATHERV_FLOAT, ALLREDUCE_SUM_FLOAT, CommStruct

__all__ = ["Communicator", "MPICommunicator"]


class Communicator:
    """Collectives for Trainer.step_distributed. Subclasses implement, for this rank of `size`:

    - allgather_int64(value) -> list of every rank's value, in rank order;
    - allgatherv_float(send, recv, counts): concatenate every rank's float32 block (counts[r]
      elements from rank r) into recv, in rank order (send/recv are 1-D float32 arrays);
    - allreduce_sum_float(data): sum the float32 array over ranks, in place.

    An exception raised by a collective makes the step fail with LIFT_ERR_IO; it is re-raised
    from step_distributed after the library has returned (callbacks cannot raise through C).
    """

    def __init__(self, rank: int, size: int):
        if not 0 <= rank < size:
            raise ValueError(f"rank {rank} is not in [0, {size})")
        self.rank, self.size = int(rank), int(size)
        self._pending: BaseException | None = None
        # The CFUNCTYPE objects must outlive every call; they live as long as the communicator.
        self._callbacks = (ALLGATHER_INT64(self._c_allgather_int64), ALLGATHERV_FLOAT(self._c_allgatherv_float),
                           ALLREDUCE_SUM_FLOAT(self._c_allreduce_sum_float))
        gather, gatherv, reduce = self._callbacks
        self.struct = CommStruct(context=None, rank=self.rank, size=self.size, allgather_int64=gather,
                                 allgatherv_float=gatherv, allreduce_sum_float=reduce)

    def allgather_int64(self, value: int) -> list[int]:
        raise NotImplementedError

    def allgatherv_float(self, send: np.ndarray, recv: np.ndarray, counts: np.ndarray) -> None:
        raise NotImplementedError

    def allreduce_sum_float(self, data: np.ndarray) -> None:
        raise NotImplementedError

    def raise_pending(self) -> None:
        """Re-raise the first exception a callback swallowed during the last call, if any."""
        error, self._pending = self._pending, None
        if error is not None:
            raise error

    def _guard(self, fn) -> int:
        try:
            fn()
            return 0
        except BaseException as e:  # noqa: BLE001 - must not unwind through C
            if self._pending is None:
                self._pending = e
            return 1

    def _c_allgather_int64(self, _ctx, value, out):
        def run():
            values = self.allgather_int64(int(value))
            if len(values) != self.size:
                raise RuntimeError(f"allgather_int64 returned {len(values)} values for {self.size} ranks")
            for r, v in enumerate(values):
                out[r] = int(v)
        return self._guard(run)

    def _c_allgatherv_float(self, _ctx, send, count, recv, counts):
        def run():
            c = np.ctypeslib.as_array(counts, shape=(self.size,)).copy()
            s = np.ctypeslib.as_array(send, shape=(int(count),))
            r = np.ctypeslib.as_array(recv, shape=(int(c.sum()),))
            self.allgatherv_float(s, r, c)
        return self._guard(run)

    def _c_allreduce_sum_float(self, _ctx, data, count):
        return self._guard(lambda: self.allreduce_sum_float(np.ctypeslib.as_array(data, shape=(int(count),))))


class MPICommunicator(Communicator):
    """The collectives over an mpi4py communicator (default MPI.COMM_WORLD)."""

    # MPI counts are C ints; larger reductions go in pieces.
    _CHUNK = 2**31 - 1

    def __init__(self, comm=None):
        from mpi4py import MPI  # imported here: the rest of liblift does not need mpi4py

        self._MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        super().__init__(self.comm.Get_rank(), self.comm.Get_size())

    def allgather_int64(self, value):
        out = np.empty(self.size, np.int64)
        self.comm.Allgather(np.array([value], np.int64), out)
        return out.tolist()

    def allgatherv_float(self, send, recv, counts):
        if counts.max(initial=0) > self._CHUNK or counts.sum() > self._CHUNK:
            raise ValueError(f"all-gather of {int(counts.sum())} floats exceeds MPI's int count limit")
        displs = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.comm.Allgatherv(send, [recv, counts.tolist(), displs.tolist(), self._MPI.FLOAT])

    def allreduce_sum_float(self, data):
        for start in range(0, data.size, self._CHUNK):
            self.comm.Allreduce(self._MPI.IN_PLACE, data[start:start + self._CHUNK], op=self._MPI.SUM)
