"""The per-experience memo of the frozen prefix: same outputs, each image computed once, bounded, dropped."""

import torch

from cldf.detector import Detector, DetectorConfig
from cldf.detector.prefix_memo import PrefixMemo


def detector() -> Detector:
    torch.manual_seed(0)
    return Detector(DetectorConfig(pretrained=False, image_size=32))


def test_outputs_match_and_each_image_is_computed_once():
    det = detector()
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        plain = det.features(x.clone())  # (a new tensor: the same-batch reuse would skip the memo)
        with det.remembering_prefix(64) as memo:
            first = det.features(x)
            again = det.features(x[[5, 0, 3]])  # a later epoch: other batches, other order
            mixed = det.features(torch.cat([x[:2], torch.randn(2, 3, 32, 32)]))
        assert det._prefix_memo is None  # nothing per image outlives the block
    assert torch.equal(first, plain)  # a batch of unseen images is computed whole, as before
    assert torch.allclose(again, plain[[5, 0, 3]], atol=1e-5)
    assert torch.allclose(mixed[:2], plain[:2], atol=1e-5)
    assert (memo.misses, memo.hits) == (8, 5)


def test_the_budget_bounds_what_is_kept():
    calls = []

    def compute(batch):
        calls.append(len(batch))
        return batch.flatten(1)[:, :4].clone()

    x = torch.randn(4, 3, 8, 8)
    memo = PrefixMemo(budget_bytes=2 * 4 * 4)  # two rows of four float32
    memo.prefix(x, compute)
    out = memo.prefix(x, compute)
    assert torch.equal(out, x.flatten(1)[:, :4]) and calls == [4, 2] and memo.used_bytes == 32
