"""collect_importance: the mean squared input activation per input channel of every Linear and
Conv, on a tiny model with hand-computed values."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from coreml_compress.torch import collect_importance
from torch import nn


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.head = nn.Sequential(nn.Conv2d(2, 1, kernel_size=2, padding=1))
        self.unused = nn.Linear(5, 5)

    def forward(self, x: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        y = self.fc(x)
        if image is not None:
            self.head(image)
        return y


def test_tensors_tuples_and_dicts_by_hand(tmp_path: Path) -> None:
    model = Tiny().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    image = torch.tensor([2.0, 3.0]).reshape(1, 2, 1, 1)
    data = [
        torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]]),  # model(x)
        {"x": torch.tensor([[2.0, 0.0, 0.0]]), "image": image},  # model(**item)
        (torch.tensor([1.0, 1.0, 1.0]),),  # model(*item)
        (torch.tensor([100.0, 100.0, 100.0]),),  # beyond n_samples
    ]
    path = tmp_path / "imp.safetensors"
    imp = collect_importance(model, data, n_samples=3, path=path)
    assert set(imp) == {"fc", "head.0"}  # the unused Linear saw no data
    # fc: rows (1,2,3), (0,1,0), (2,0,0), (1,1,1): channel sums of squares 6, 6, 10 over 4 rows.
    torch.testing.assert_close(imp["fc"], torch.tensor([1.5, 1.5, 2.5]), rtol=0, atol=0)
    # head.0: a 1x1 image padded to 3x3 gives 4 output positions, each 2x2 window holding the
    # pixel once and padding zeros three times: mean over rows and offsets is x_c² / 4.
    torch.testing.assert_close(imp["head.0"], torch.tensor([1.0, 2.25]), rtol=0, atol=0)
    assert all(v.dtype == torch.float32 for v in imp.values())
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == {"fc", "head.0"}
        assert f.metadata() == {"n_samples": "3"}
        torch.testing.assert_close(f.get_tensor("fc"), imp["fc"])


def _unfold_reference(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """GPTQ's rows: pad as the conv does, unfold, mean of the squares over rows and offsets."""
    x = x.double()
    padding = conv.padding
    if conv.padding_mode != "zeros":
        x = nn.functional.pad(x, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
        padding = 0
    cols = nn.functional.unfold(
        x, conv.kernel_size, dilation=conv.dilation, padding=padding, stride=conv.stride
    )  # [B, C*kh*kw, L]
    rows = cols.transpose(1, 2).reshape(-1, cols.shape[1])
    per_column = (rows * rows).mean(0)
    return per_column.reshape(x.shape[1], -1).mean(1).float()


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
def test_conv_matches_unfold_rows(padding_mode: str) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(
        3,
        4,
        kernel_size=(3, 2),
        stride=(2, 1),
        padding=(1, 1),
        dilation=(1, 2),
        padding_mode=padding_mode,
    )
    batches = [torch.randn(2, 3, 9, 8), torch.randn(1, 3, 9, 8)]
    imp = collect_importance(conv, batches)
    want = _unfold_reference(conv, torch.cat(batches))
    torch.testing.assert_close(imp[""], want, rtol=1e-6, atol=0)


def test_conv1d_grouped_and_unbatched() -> None:
    conv = nn.Conv1d(4, 2, kernel_size=1, groups=2)
    x = torch.tensor([[1.0, 3.0], [2.0, 0.0], [0.0, 0.0], [4.0, 4.0]])  # unbatched [C, L]
    imp = collect_importance(conv, [x])
    # kernel 1, no padding: each channel's mean square over the 2 positions, one per in_channel.
    torch.testing.assert_close(imp[""], torch.tensor([5.0, 2.0, 0.0, 16.0]), rtol=0, atol=0)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="n_samples must be at least 1"):
        collect_importance(Tiny(), [torch.zeros(1, 3)], n_samples=0)
    with pytest.raises(ValueError, match="gave no item"):
        collect_importance(Tiny(), [])
