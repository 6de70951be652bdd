"""One side of the data-parallel exactness test (run by ../test_distributed.py).

    mpirun -n R python -m mpi4py exactness.py distributed OUT.npz [--objective O] [--capacity C]
    python exactness.py single OUT.npz [--objective O]

Every run trains the same tiny model (same seed) for --steps steps on the same global batches
(--batch images, drawn from a seeded generator). `distributed` splits each global batch over the
MPI ranks in near-equal contiguous parts and calls Trainer.step_distributed; `single` calls
Trainer.step on the whole batch in one forward. With --features the tower is locked and the steps
are the head-only ones on pooled features (step_features_distributed / step_features). Rank 0
saves per-step losses, gradient norms and the final parameters.
"""
import argparse

import numpy as np

import liblift
from liblift.distributed import MPICommunicator


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["distributed", "single"])
    p.add_argument("out")
    p.add_argument("--objective", default="contrastive")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--capacity", type=int, default=0, help="micro-batch size per rank (0: whole local part)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--grad-clip", type=float, default=0.05)
    p.add_argument("--poison-rank", type=int, default=-1, help="this rank feeds a NaN image at step 2 (failure test)")
    p.add_argument("--features", action="store_true", help="tower locked, steps on pooled features")
    a = p.parse_args()

    d = 16
    config = liblift.ModelConfig.preset("ViT-XS/4-32", d, image_size=8, patch=4, width=32, depth=2, heads=2,
                                        objective=a.objective, precision=a.precision)
    model = liblift.Model(config, seed=11)
    if a.mode == "distributed":
        comm = MPICommunicator()
        rank, size = comm.rank, comm.size
    else:
        comm, rank, size = None, 0, 1
    bounds = [a.batch * r // size for r in range(size + 1)]
    lo, hi = bounds[rank], bounds[rank + 1]
    capacity = a.capacity or (hi - lo if comm else a.batch)
    # Small clip threshold: clipping is active, so the global norm must be right.
    trainer = liblift.Trainer(model, seed=5, batch_capacity=capacity, warmup_steps=1, total_steps=a.steps,
                              learning_rate=3e-3, grad_clip=a.grad_clip, unlocked_groups=0 if a.features else None)
    data = np.random.default_rng(2024)
    losses, norms = [], []
    for step in range(a.steps):
        images = data.integers(0, 256, (a.batch, 8, 8, 3), dtype=np.uint8)
        texts = data.standard_normal((a.batch, d)).astype(np.float32)
        if rank == a.poison_rank and step == 2:
            bad = images[lo:hi].transpose(0, 3, 1, 2).astype(np.float32)
            bad[0, 0, 0, 0] = np.nan
            trainer.step_distributed(bad, texts[lo:hi], comm)  # raises on this rank only
        if a.features and comm:
            s = trainer.step_features_distributed(model.features(images[lo:hi]), texts[lo:hi], comm)
        elif a.features:
            s = trainer.step_features(model.features(images), texts)
        elif comm:
            s = trainer.step_distributed(images[lo:hi], texts[lo:hi], comm)
        else:
            s = trainer.step(images, texts)
        losses.append(s.loss)
        norms.append(s.grad_norm)
    params = model.parameters.copy()
    if comm:
        # Every rank must hold the same parameters, bit for bit (identical update everywhere).
        mpi = comm.comm
        first = mpi.bcast(params if rank == 0 else None, root=0)
        assert np.array_equal(first, params), f"rank {rank} parameters differ from rank 0"
    if rank == 0:
        np.savez(a.out, losses=np.array(losses), norms=np.array(norms), params=params, size=size)


if __name__ == "__main__":
    main()
