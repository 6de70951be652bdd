#!/usr/bin/env python3
"""Data-parallel LIFT training from Python: mpi4py supplies the collectives, liblift the step.

Every rank opens the same dataset, builds the same model (same seed), reads its own part of each
global batch and calls Trainer.step_distributed; rank 0 prints and writes the checkpoint. Run it
through `python -m mpi4py` so that an exception on any rank aborts the whole job:

    mpirun -n 2 python3 -m mpi4py examples/python/train_mpi.py data/fashion-mnist/train.h5 [STEPS] [OUT]
"""
import sys
import tempfile
import time
from pathlib import Path

import liblift
from liblift.distributed import MPICommunicator


def main():
    data = sys.argv[1]
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    out = Path(sys.argv[3]) if len(sys.argv) > 3 else Path(tempfile.gettempdir()) / "liblift-train-mpi.safetensors"
    comm = MPICommunicator()
    global_batch = 256

    dataset = liblift.Dataset([data])
    config = liblift.ModelConfig.preset("ViT-XS/14-28", dataset.text_dim)
    model = liblift.Model(config, seed=0)
    per_rank = -(-global_batch // comm.size)  # ceil: the largest part a rank gets
    trainer = liblift.Trainer(model, seed=0, batch_capacity=per_rank, total_steps=steps, warmup_steps=steps // 10)
    loader = liblift.Loader(dataset, global_batch, config.image_size, config.channels, seed=0,
                            rank=comm.rank, workers=comm.size, copy=False)
    start = time.perf_counter()
    for _ in range(steps):
        batch = loader.next()
        stats = trainer.step_distributed(batch.images, batch.texts, comm)
        if comm.rank == 0 and (stats.step % 10 == 0 or stats.step == steps):
            rate = stats.step * global_batch / (time.perf_counter() - start)
            print(f"step {stats.step:3d}  loss {stats.loss:.4f}  lr {stats.learning_rate:.2e}  "
                  f"{rate:.0f} img/s over {comm.size} ranks", flush=True)
    if comm.rank == 0:
        # The data position after the last batch, for resuming with a Loader(start=...).
        last = batch.batch + 1 == loader.batches_per_epoch
        position = (batch.epoch + 1, 0) if last else (batch.epoch, batch.batch + 1)
        trainer.save(out, metadata={"epoch": position[0], "batch": position[1]})
        print(f"saved {out}")


if __name__ == "__main__":
    main()
