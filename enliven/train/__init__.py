"""Training of the learned generator: landmark cache, self-reenactment pairs, losses, loop, CLI.

    clips --cache.py (MediaPipe once)--> landmarks --dataset.py--> pairs (source, driver, warp)
          --loop.py (generator + losses.py)--> checkpoints --> shipped weights

Nothing here is imported by the runtime: inference needs only ``engine.generator``.
"""
