"""The machine is shared: keep torch to one thread in these tests (the networks are tiny here)."""

import torch

torch.set_num_threads(1)
