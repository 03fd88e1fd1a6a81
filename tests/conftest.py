"""Test-wide settings: one torch thread (also for subprocesses and notebook kernels).

On a small shared CI machine, torch's default of one thread per core oversubscribes the CPU
as soon as anything else runs and can make a training step tens of times slower; one thread
everywhere also keeps runs bit-identical across the processes of the resume tests.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402  (after the environment variable, so it takes effect)

torch.set_num_threads(1)
