"""The run's --seed reaches every method's own generator (head initialisation, pseudo-features)."""

import torch

from cldf.detector import Detector
from cldf.methods.napa_vq import NAPAVQ
from cldf.recipes import load_recipe
from cldf.avalanche.build import model_for


def test_method_generators_follow_the_run_seed():
    recipe = load_recipe("cldf", ["detector.image_size=32", "detector.pretrained=false"])
    assert recipe.for_run_seed(0) == recipe
    heads, pseudo = [], []
    for seed in (0, 0, 1):
        seeded = recipe.for_run_seed(seed)
        torch.manual_seed(0)  # the global generator is the same: only the methods' own ones differ
        learners = model_for(seeded, Detector(seeded.detector))
        heads.append(learners.fast_head.weight.detach().clone())
        pseudo.append(NAPAVQ(seeded.methods["napa_vq"], 8).generator.initial_seed())
    assert torch.equal(heads[0], heads[1]) and not torch.equal(heads[0], heads[2])
    assert pseudo[0] == pseudo[1] != pseudo[2]
