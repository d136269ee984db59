"""Benchmark: trainer/ against PyTorch (CPU) on the same networks, data, batches and epochs.

Run from the repository root (PyTorch is the ``bench`` extra, not a dependency of trainer):

    python bench/trainer_vs_torch.py [--rounds 5] [--epochs 3] [--quick]

Both sides get one BLAS/intra-op thread (threadpoolctl for NumPy, torch.set_num_threads(1)
for PyTorch), the same float32 data, the same shuffling and batch size, and do the same
per-epoch work as ``trainer.train``: one forward/backward/update per mini-batch, the
epoch's training cost and accuracy from those passes, then a pass over the dev set.
Runs are interleaved (trainer, torch, trainer, ...) so that drift in the machine's speed
hits both alike, and the median seconds per epoch over all rounds is reported.

Three networks, as issue 3 sets the goals:

- course: [2, 20, 7, 5, 1], 300 moons, batch 64, Adam. Goal: trainer <= 0.25x torch.
- medium: [784, 256, 128, 10], 10,000 examples, batch 128, Adam. Goal: <= 1.0x torch with
  its fastest Adam (default, foreach=True and fused=True are all measured).
- large:  [784, 1024, 1024, 10], batch 1024. Goal: <= 1.0x torch, and >= 90% of NumPy's own
  1024x1024 matmul GFLOP/s, counting 6 x parameters x examples per epoch.

Memory: peak RSS of a fresh process training the medium network with each library (the
trainer's process never imports torch), and their ratio (goal: < 1.5x).

An ``OPENBLAS_CORETYPE`` in the environment can force a slow kernel: it is printed with
the BLAS libraries in use, so that only like is compared with like.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trainer import Dataset, TrainConfig, load_dataset, train  # noqa: E402


@dataclass(frozen=True)
class Case:
    name: str
    hidden: list[int]
    batch: int
    goal: str


CASES = {
    "course": Case("course", [20, 7, 5], 64, "<= 0.25x torch"),
    "medium": Case("medium", [256, 128], 128, "<= 1.0x torch's fastest Adam"),
    "large": Case("large", [1024, 1024], 1024, "<= 1.0x torch and >= 90% of matmul GFLOP/s"),
}


def make_data(case: str, quick: bool = False) -> Dataset:
    """The same float32 data for both libraries: moons, or a 784-feature 10-class problem.

    The large sets are drawn straight in float32 with exactly the stated number of
    training examples (plus a quarter as many for dev), so the data themselves take no
    more memory than a worker's would.
    """
    if case == "course":
        return load_dataset({"name": "moons", "n_samples": 375, "noise": 0.2, "seed": 0})
    m_train = {"medium": 10_000, "large": 8_192}[case]
    if quick:
        m_train //= 4
    m_dev = m_train // 4
    rng = np.random.default_rng(0)
    teacher = rng.standard_normal((784, 10), dtype=np.float32)

    def draw(m: int) -> tuple[np.ndarray, np.ndarray]:
        X = rng.standard_normal((m, 784), dtype=np.float32)
        noise = 0.3 * rng.standard_normal((m, 10), dtype=np.float32)
        return X, np.argmax(np.tanh(X @ teacher) + noise, axis=1).astype(np.int64)

    X_train, y_train = draw(m_train)
    X_dev, y_dev = draw(m_dev)
    return Dataset(
        name=case,
        task="multiclass",
        X_train=X_train,
        y_train=y_train,
        X_dev=X_dev,
        y_dev=y_dev,
        n_classes=10,
    )


def n_params(sizes: list[int]) -> int:
    return sum(sizes[i] * sizes[i - 1] + sizes[i] for i in range(1, len(sizes)))


# -- trainer ------------------------------------------------------------------------------


def trainer_epochs(case: Case, ds: Dataset, epochs: int, seed: int) -> list[float]:
    cfg = TrainConfig(
        hidden_layers=case.hidden,
        optimizer="adam",
        learning_rate=0.001,
        batch_size=case.batch,
        epochs=epochs,
        dtype="float32",
        seed=seed,
    )
    result = train(cfg, ds)
    assert result.status == "completed", result.status
    return [h["seconds"] for h in result.history]


def dev_pass_seconds(case: Case, ds: Dataset, repeats: int = 5) -> float:
    """Median time of the per-epoch dev evaluation that ``train`` runs (inference mode)."""
    from trainer import Model

    cfg = TrainConfig(hidden_layers=case.hidden, batch_size=case.batch, dtype="float32")
    model = Model(cfg, ds.n_features, ds.n_outputs, ds.task)
    X = model.prepare_inputs(ds.X_dev)
    y = model.prepare_targets(ds.y_dev, len(X))
    model.loss(X, y, training=False)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        model.loss(X, y, training=False)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


# -- torch --------------------------------------------------------------------------------


def torch_epochs(case: Case, ds: Dataset, epochs: int, seed: int, adam: str) -> list[float]:
    import torch
    from torch import nn

    torch.manual_seed(seed)
    sizes = [ds.n_features, *case.hidden, ds.n_outputs]
    layers: list[nn.Module] = []
    for i in range(1, len(sizes)):
        layers.append(nn.Linear(sizes[i - 1], sizes[i]))
        if i < len(sizes) - 1:
            layers.append(nn.ReLU())
    net = nn.Sequential(*layers)
    for module in net:
        if isinstance(module, nn.Linear):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)
    kwargs: dict[str, Any] = {"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-8}
    if adam == "foreach":
        kwargs["foreach"] = True
    elif adam == "fused":
        kwargs["fused"] = True
    optimizer = torch.optim.Adam(net.parameters(), **kwargs)
    binary = ds.task == "binary"
    X = torch.from_numpy(np.ascontiguousarray(ds.X_train, dtype=np.float32))
    X_dev = torch.from_numpy(np.ascontiguousarray(ds.X_dev, dtype=np.float32))
    if binary:
        y = torch.from_numpy(ds.y_train.astype(np.float32)).reshape(-1, 1)
        y_dev = torch.from_numpy(ds.y_dev.astype(np.float32)).reshape(-1, 1)
        loss_fn: nn.Module = nn.BCEWithLogitsLoss()
    else:
        y = torch.from_numpy(ds.y_train.astype(np.int64))
        y_dev = torch.from_numpy(ds.y_dev.astype(np.int64))
        loss_fn = nn.CrossEntropyLoss()
    m = X.shape[0]
    generator = np.random.default_rng(seed)
    order = np.arange(m)
    seconds = []
    for _ in range(epochs):
        began = time.perf_counter()
        generator.shuffle(order)
        index = torch.from_numpy(order)
        total, correct = 0.0, 0
        for start in range(0, m, case.batch):
            idx = index[start : start + case.batch]
            xb, yb = X[idx], y[idx]
            optimizer.zero_grad(set_to_none=True)
            out = net(xb)
            loss = loss_fn(out, yb)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                total += float(loss) * len(idx)
                if binary:
                    correct += int(((out > 0).float() == yb).sum())
                else:
                    correct += int((out.argmax(dim=1) == yb).sum())
        with torch.no_grad():
            out = net(X_dev)
            dev_cost = float(loss_fn(out, y_dev))
            pred = (out > 0).float() if binary else out.argmax(dim=1)
            dev_acc = float((pred == y_dev).float().mean())
        assert np.isfinite(total) and np.isfinite(dev_cost) and 0 <= dev_acc <= 1
        seconds.append(time.perf_counter() - began)
    return seconds


# -- helpers ------------------------------------------------------------------------------


def matmul_gflops(n: int = 1024, repeats: int = 21) -> float:
    """NumPy's n x n float32 matmul rate: the median of ``repeats`` runs, summarized like
    the epochs (a best-of would set the bar at the luckiest run)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    np.matmul(a, b, out=out)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - began)
    return 2 * n**3 / statistics.median(times) / 1e9


def peak_rss_child(library: str, epochs: int, quick: bool) -> dict[str, float]:
    """Peak RSS in MiB of a fresh process training the medium network with ``library``,
    and its RSS once the data were made (imports and data, before training)."""
    cmd = [sys.executable, __file__, "--memory-child", library, "--epochs", str(epochs)]
    if quick:
        cmd.append("--quick")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def memory_child(library: str, epochs: int, quick: bool) -> None:
    with threadpool_limits(1):
        if library == "torch":
            import torch

            torch.set_num_threads(1)
        ds = make_data("medium", quick)
        before = current_rss_mib()
        case = CASES["medium"]
        if library == "trainer":
            trainer_epochs(case, ds, epochs, 0)
        else:
            torch_epochs(case, ds, epochs, 0, "fused")
    print(json.dumps({"peak_rss_mib": peak_rss_mib(), "before_training_mib": before}))


def current_rss_mib() -> float:
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss
    over exec from the forking parent, so a child would report the benchmark's own peak."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def describe_environment() -> None:
    import torch

    print(f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs")
    for key in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        print(f"{key}={os.environ.get(key, '(unset)')}")
    for lib in threadpool_info():
        print(
            f"numpy BLAS: {lib.get('internal_api')} {lib.get('version')} "
            f"kernel={lib.get('architecture')} threads={lib.get('num_threads')} "
            f"({Path(lib.get('filepath', '')).name})"
        )
    print(f"torch threads={torch.get_num_threads()}, mkldnn={torch.backends.mkldnn.is_available()}")
    blas = [line.strip() for line in torch.__config__.show().splitlines() if "BLAS" in line]
    print("torch build: " + "; ".join(blas[:2]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per case")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per round")
    parser.add_argument("--cases", default="course,medium,large")
    parser.add_argument("--quick", action="store_true", help="smaller data, for a smoke test")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-child", choices=["trainer", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.epochs, args.quick)
        return

    import torch

    torch.set_num_threads(1)
    with threadpool_limits(1):
        describe_environment()
        gflops_matmul = matmul_gflops()
        print(f"numpy 1024x1024 float32 matmul: {gflops_matmul:.1f} GFLOP/s (one thread, median)\n")
        header = f"{'case':8} {'library':22} {'s/epoch':>10} {'ratio':>8}"
        for name in args.cases.split(","):
            case = CASES[name]
            ds = make_data(name, args.quick)
            adams = ["default"] if name == "course" else ["default", "foreach", "fused"]
            times: dict[str, list[float]] = {"trainer": []} | {f"torch {a}": [] for a in adams}
            # Warm up both (allocators, BLAS buffers, torch's dispatcher).
            trainer_epochs(case, ds, 1, 0)
            for adam in adams:
                torch_epochs(case, ds, 1, 0, adam)
            matmul_rates = []
            for r in range(args.rounds):
                # The reference rate is measured inside the same rounds, so load from
                # elsewhere on the machine weighs on both sides of the GFLOP/s ratio.
                matmul_rates.append(matmul_gflops(repeats=5))
                times["trainer"] += trainer_epochs(case, ds, args.epochs, r)
                for adam in adams:
                    times[f"torch {adam}"] += torch_epochs(case, ds, args.epochs, r, adam)
            median = {k: statistics.median(v) for k, v in times.items()}
            fastest = min((k for k in median if k != "trainer"), key=median.__getitem__)
            sizes = [ds.n_features, *case.hidden, ds.n_outputs]
            print(
                f"{name}: {sizes}, {len(ds.X_train)} examples, batch {case.batch}, "
                f"float32, Adam; goal {case.goal}"
            )
            print(header)
            for key, value in median.items():
                ratio = median["trainer"] / value if key != "trainer" else 1.0
                print(f"{name:8} {key:22} {value:10.5f} {ratio:8.3f}")
            print(
                f"{name:8} trainer / fastest torch ({fastest}): "
                f"{median['trainer'] / median[fastest]:.3f}x"
            )
            gflops_matmul = statistics.median(matmul_rates)
            flops = 6 * n_params(sizes) * len(ds.X_train)
            gflops = flops / median["trainer"] / 1e9
            print(
                f"{name:8} trainer: {gflops:.1f} GFLOP/s by 6 x params x examples = "
                f"{100 * gflops / gflops_matmul:.0f}% of the matmul's {gflops_matmul:.1f} "
                "measured in the same rounds (whole epoch)"
            )
            # The epoch also evaluates the dev set (a forward pass, 2 x params x dev
            # examples), which the 6 x count leaves out: report the rate with that work
            # counted too, and the training steps' rate alone (the epoch minus the timed
            # dev pass). Both sides of the torch comparison evaluate the dev set.
            dev_flops = 2 * n_params(sizes) * len(ds.X_dev)
            work = (flops + dev_flops) / median["trainer"] / 1e9
            dev = dev_pass_seconds(case, ds)
            steps = flops / (median["trainer"] - dev) / 1e9
            print(
                f"{name:8} trainer: {work:.1f} GFLOP/s counting the dev pass's "
                f"2 x params x dev examples too = {100 * work / gflops_matmul:.0f}% (whole epoch)"
            )
            print(
                f"{name:8} trainer: dev pass {dev:.5f} s; training steps alone {steps:.1f} "
                f"GFLOP/s = {100 * steps / gflops_matmul:.0f}% of the matmul's\n"
            )
    if not args.no_memory:
        rss_trainer = peak_rss_child("trainer", 2, args.quick)
        rss_torch = peak_rss_child("torch", 2, args.quick)
        mine, theirs = rss_trainer["peak_rss_mib"], rss_torch["peak_rss_mib"]
        print(
            f"memory (medium, peak RSS of a fresh process): trainer {mine:.0f} MiB, "
            f"torch {theirs:.0f} MiB, ratio {mine / theirs:.2f}x (goal < 1.5x)"
        )
        grown_mine = mine - rss_trainer["before_training_mib"]
        grown_theirs = theirs - rss_torch["before_training_mib"]
        print(
            f"memory added by training (peak minus RSS after imports and data): trainer "
            f"{grown_mine:.0f} MiB, torch {grown_theirs:.0f} MiB"
        )


if __name__ == "__main__":
    main()
