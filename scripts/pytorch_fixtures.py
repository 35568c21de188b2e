"""Makes the PyTorch fixtures `tests/pytorch.rs` loads: small models built and trained a little
with PyTorch, each saved as `state_dict()` to safetensors, with a fixed input and PyTorch's
output on it beside it. Run once; the files are committed and no Python runs in CI.

    python3 -m venv /tmp/torch && /tmp/torch/bin/pip install torch safetensors
    /tmp/torch/bin/python scripts/pytorch_fixtures.py

Writes `tests/fixtures/pytorch/{name}.safetensors` (the `state_dict`, as a user would save
it) and `{name}.io.safetensors` (`input`, `output`, float32), and `PROVENANCE.md` with the
PyTorch version and a SHA-256 of every file.
"""

import hashlib
import pathlib

import torch
from safetensors.torch import save_file
from torch import nn

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "pytorch"


class Cnn(nn.Module):
    """Conv + BatchNorm block, pooling and a linear head, on 1x8x8 images."""

    def __init__(self, bias: bool):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1, bias=bias),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class Reader(nn.Module):
    """A single-layer GRU or LSTM over (batch, time, 8), read at its last step."""

    def __init__(self, kind):
        super().__init__()
        self.rnn = kind(8, 16, batch_first=True)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


def trained(model, x, steps=30):
    """A few Adam steps on random targets, so the weights (and BatchNorm's running
    statistics) are far from their initialisation; then evaluation mode."""
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    target = torch.randn_like(model(x))
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), target).backward()
        opt.step()
    return model.eval()


def save(name, model, x, dtype=torch.float32):
    """The state_dict in `dtype`, and the input with PyTorch's output, computed in float32
    from the weights as saved (so the rounding to f16/bf16 is in the reference too)."""
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    saved = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    model.load_state_dict({k: v.to(state[k].dtype) for k, v in saved.items()})
    with torch.no_grad():
        y = model(x)
    save_file(saved, OUT / f"{name}.safetensors")
    save_file({"input": x.contiguous(), "output": y.contiguous()}, OUT / f"{name}.io.safetensors")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    x = torch.randn(6, 16)
    trained(mlp, x)
    save("mlp", mlp, x)
    for dtype, name in [(torch.float16, "f16"), (torch.bfloat16, "bf16"), (torch.float64, "f64")]:
        copy = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
        copy.load_state_dict(mlp.state_dict())
        save(f"mlp_{name}", copy, x, dtype)

    nobias = nn.Sequential(nn.Linear(16, 32, bias=False), nn.ReLU(), nn.Linear(32, 4))
    trained(nobias, x)
    save("mlp_nobias", nobias, x)

    images = torch.randn(5, 1, 8, 8)
    for bias in (True, False):
        cnn = trained(Cnn(bias), images)
        save("cnn" if bias else "cnn_nobias", cnn, images)

    sequences = torch.randn(3, 7, 8)
    save("gru", trained(Reader(nn.GRU), sequences), sequences)
    save("lstm", trained(Reader(nn.LSTM), sequences), sequences)

    lines = [
        "# PyTorch fixtures",
        "",
        f"Made by `scripts/pytorch_fixtures.py` with PyTorch {torch.__version__} (CPU).",
        "",
        "| file | SHA-256 |",
        "|---|---|",
    ]
    for f in sorted(OUT.glob("*.safetensors")):
        lines.append(f"| {f.name} | {hashlib.sha256(f.read_bytes()).hexdigest()} |")
    (OUT / "PROVENANCE.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
