"""PyTorch on the shapes of `cargo bench --bench conv`, for the side-by-side table in README.md.

Measurement only: Python is in no build or test. Run it in the same period as the Rust bench:

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch
    /tmp/torchenv/bin/python scripts/torch_conv_bench.py

Rows: Conv2d forward + backward with the input gradient, and a training step (forward,
backward, Adam) of the bare layer; (32, 16, 28, 28) input, 32 3x3 filters, padding 1, f32;
and a training step of `fashion_cnn`'s 8-16 CNN (batch 32, cross-entropy, Adam); the median
of 25 calls after one untimed call (as the Rust bench), on 1 thread and on all threads.
"""

import os
import time

import torch


def median(f, reps=25):
    f()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return sorted(times)[reps // 2] * 1e3


def rows():
    torch.manual_seed(0)
    x = torch.randn(32, 16, 28, 28)
    conv = torch.nn.Conv2d(16, 32, 3, padding=1)

    def fwd_bwd():
        xi = x.clone().requires_grad_(True)
        conv(xi).sum().backward()

    opt = torch.optim.Adam(conv.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=False)
        conv(x).sum().backward()
        opt.step()

    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1),
        torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(784, 10),
    )
    images = torch.randn(32, 1, 28, 28)
    targets = torch.softmax(torch.randn(32, 10), dim=1)
    cnn_opt = torch.optim.Adam(cnn.parameters(), lr=1e-3)

    def cnn_step():
        cnn_opt.zero_grad(set_to_none=False)
        torch.nn.functional.cross_entropy(cnn(images), targets).backward()
        cnn_opt.step()

    return [
        ("forward + backward (input gradient)", median(fwd_bwd)),
        ("training step, Adam", median(step)),
        ("fashion_cnn 8-16 training step", median(cnn_step)),
    ]


def main():
    all_threads = os.cpu_count()
    print(f"PyTorch {torch.__version__}, conv2d (32, 16, 28, 28), 32 filters 3x3, padding 1, f32")
    results = {}
    for n in (1, all_threads):
        torch.set_num_threads(n)
        results[n] = rows()
    print(f"| row | ms, 1 thread | ms, {all_threads} threads |")
    print("|---|---:|---:|")
    for (name, a), (_, b) in zip(results[1], results[all_threads]):
        print(f"| {name} | {a:.2f} | {b:.2f} |")


if __name__ == "__main__":
    main()
