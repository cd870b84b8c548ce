"""Serving runtimes vs Keras fp32: batch-1 latency, batch-16 throughput, top-1 agreement.

With ``--store DIR --models A,B``: trained models of a model store (e.g. a HAM10000 model trained
at 224 px by ``medrobust train``, or the reproduce study's models), each at its own input size;
int8's ranges and bf16's guard come from the model's own training split, as serving derives them,
and agreement is measured on up to ``--images`` of its own test split. Without: for each
architecture and input size, a ResNet-50 (``weights=None``: speed does not depend on the weights)
is stored in a temporary model store and loaded back as the API loads it; each runtime of
``training.runtimes`` is derived from that stored model (the OpenVINO IR converted and cached next
to it; ``openvino-int8`` quantised on real HAM10000 *training* images, as serving quantises on the
model's own training split). Top-1 agreement with Keras fp32 is measured on real HAM10000 test
images, prepared as serving prepares them; the logits bias is first centred on those images so an
untrained network
spreads its predictions over the classes instead of answering one class for every image (which
would make agreement trivially 100 %). The smallest top-1/top-2 probability gap is printed, since
agreement means little when the model is certain of everything. For ``openvino-bf16`` the share
of images its margin guard recomputed in f32 during the agreement pass is printed too.

Timing is interleaved: every round times every runtime in turn (batch-1 latency: the median of
``--calls`` single-image calls; batch-16: images/s over ``--calls`` full batches), so load from
other processes on a shared machine falls on all runtimes alike. The row reports the median over
rounds and the ratio to Keras fp32 of the same round. The machine's load average is printed; the
issue's goals (best runtime ≥ 2× Keras fp32 at 224 px, batch-1 latency below Keras fp32's) are
judged on a quiet machine.

    .venv/bin/python bench/serve_runtimes.py                     # 224 and 64 px, both models
    .venv/bin/python bench/serve_runtimes.py --sizes 64 --rounds 2 --calls 3 --images 64
    .venv/bin/python bench/serve_runtimes.py --store var/serve224/models \
        --models ham224-baseline,ham224-attention
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from training.architecture import ArchitectureConfig
from training.data import load_ham10000
from training.data.registry import data_dir
from training.models import LOGITS_LAYER, build_from_config
from training.preprocess import PreprocessConfig, prepare_batch, read_image
from training.runtimes import (
    KERAS,
    KERAS_BF16,
    OPENVINO,
    OPENVINO_BF16,
    OPENVINO_INT8,
    Calibration,
    keras_fp32,
    runtime_dir,
)
from training.runtimes.bf16 import keras_bf16
from training.runtimes.calibration import (
    QUANTISATION_LIMIT,
    split_calibration,
    training_calibration,
)
from training.runtimes.openvino_bf16 import GuardedBf16Forward, guarded_bf16
from training.runtimes.openvino_int8 import ensure_int8_ir
from training.runtimes.openvino_ir import ensure_ir, openvino_forward
from training.runtimes.parity import check_parity
from training.store import LoadedModel, ModelStore

Forward = Callable[[np.ndarray], np.ndarray]
CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def ham_images(split: str, count: int) -> list[np.ndarray]:
    """``count`` HAM10000 images of ``split``, spread over the split, decoded at 200×150."""
    ham = load_ham10000(data_dir() / "ham10000_200x150")
    indices = np.flatnonzero(ham.source_split == split)
    picked = indices[np.linspace(0, len(indices) - 1, count).round().astype(int)]
    return [read_image(ham.paths[i]) for i in picked]


def stored_model(
    store: ModelStore, architecture: str, size: int, pixels: np.ndarray
) -> LoadedModel:
    """An untrained ResNet-50 whose logits are centred on ``pixels``, stored and loaded back."""
    keras.utils.set_random_seed(0)
    config = ArchitectureConfig(
        architecture=architecture, num_classes=len(CLASSES), input_size=size
    )
    model = build_from_config(config)
    layer = model.get_layer(LOGITS_LAYER)
    kernel, bias = layer.get_weights()
    logits = np.log(keras_fp32(model)(pixels[:32]) + 1e-12)
    layer.set_weights([kernel, bias - logits.mean(axis=0)])
    name = f"{architecture}-{size}"
    store.save(model, name, config, PreprocessConfig(input_size=size), CLASSES)
    return store.load(name)


def runtimes_for(
    loaded: LoadedModel, root: Path, names: list[str], quantisation: Calibration
) -> dict[str, Forward]:
    """Keras fp32 plus each named runtime, derived from the stored model as serving derives it
    (``quantisation``: the training images int8 is calibrated on)."""
    forwards: dict[str, Forward] = {KERAS: keras_fp32(loaded.model)}
    model_dir = root / loaded.manifest.name / str(loaded.manifest.version)
    weights = loaded.manifest.weights_sha256
    for name in names:
        started = time.perf_counter()
        directory = runtime_dir(model_dir, name)
        if name == OPENVINO:
            ensure_ir(loaded.model, weights, directory)
            forwards[name] = openvino_forward(directory)
            print(f"  openvino IR converted in {time.perf_counter() - started:.1f} s")
        elif name == OPENVINO_INT8:
            fp32 = runtime_dir(model_dir, OPENVINO)
            ensure_int8_ir(loaded.model, weights, fp32, directory, quantisation)
            forwards[name] = openvino_forward(directory)
            print(
                f"  openvino-int8 IR quantised on {len(quantisation.pixels)} "
                f"{quantisation.source} images in {time.perf_counter() - started:.1f} s"
            )
        elif name == OPENVINO_BF16:
            fp32 = runtime_dir(model_dir, OPENVINO)
            forwards[name], record = guarded_bf16(
                loaded.model, weights, fp32, directory, quantisation
            )
            assert record.guard is not None
            print(
                f"  openvino-bf16 guard {record.guard.guard:.3g} (max |Δp| "
                f"{record.guard.max_abs_probability_diff:.3g} on {record.guard.images} "
                f"{record.guard.source} images) in {time.perf_counter() - started:.1f} s"
            )
        elif name == KERAS_BF16:
            forwards[name] = keras_bf16(loaded.model)
        else:
            raise SystemExit(f"unknown runtime {name!r}")
    return forwards


def latency_ms(forward: Forward, image: np.ndarray, calls: int) -> float:
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        forward(image)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def throughput(forward: Forward, batch: np.ndarray, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        forward(batch)
    return calls * len(batch) / (time.perf_counter() - started)


def bench_case(
    args: argparse.Namespace,
    loaded: LoadedModel,
    pixels: np.ndarray,
    quantisation: Calibration,
    root: Path,
) -> list[dict[str, object]]:
    """Every runtime of ``loaded`` (stored under ``root``) timed and compared on ``pixels``."""
    architecture = loaded.manifest.architecture.architecture
    size = loaded.manifest.preprocess.input_size
    forwards = runtimes_for(loaded, root, args.runtimes, quantisation)
    batch = np.resize(pixels, (args.batch, *pixels.shape[1:]))
    for forward in forwards.values():  # warm up: graph tracing, IR compilation, both shapes
        forward(pixels[:1]), forward(batch)

    reference = forwards[KERAS](pixels)
    top2 = np.sort(reference, axis=1)[:, -2:]
    gap = float((top2[:, 1] - top2[:, 0]).min())
    print(
        f"  keras fp32 predicts {len(np.unique(reference.argmax(1)))} classes over "
        f"{len(pixels)} images; smallest top-1/top-2 gap {gap:.2g}"
    )
    lat: dict[str, list[float]] = {name: [] for name in forwards}
    ips: dict[str, list[float]] = {name: [] for name in forwards}
    names = list(forwards)
    for round_ in range(args.rounds):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            lat[name].append(latency_ms(forwards[name], pixels[:1], args.calls))
            ips[name].append(throughput(forwards[name], batch, args.calls))

    rows = []
    for name, forward in forwards.items():
        guarded = isinstance(forward, GuardedBf16Forward)
        if guarded:  # count the agreement pass only, not the timed rounds
            forward.images = forward.recomputed = 0
        parity = check_parity(name, forwards[KERAS], forward, pixels, "test")
        recomputed = forward.recomputed / forward.images if guarded else None
        rows.append(
            {
                "model": loaded.manifest.ref,
                "architecture": architecture,
                "size": size,
                "runtime": name,
                "batch1_latency_ms": statistics.median(lat[name]),
                "latency_vs_keras": statistics.median(
                    a / b for a, b in zip(lat[name], lat[KERAS], strict=True)
                ),
                f"batch{args.batch}_images_per_s": statistics.median(ips[name]),
                "throughput_vs_keras": statistics.median(
                    a / b for a, b in zip(ips[name], ips[KERAS], strict=True)
                ),
                "top1_agreement": parity.top1_agreement,
                "max_abs_probability_diff": parity.max_abs_probability_diff,
                "images": parity.images,
                "recomputed_in_f32": recomputed,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[224, 64])
    parser.add_argument(
        "--architectures", type=lambda s: s.split(","), default=["baseline", "attention"]
    )
    parser.add_argument(
        "--runtimes",
        type=lambda s: s.split(","),
        default=[KERAS_BF16, OPENVINO, OPENVINO_BF16, OPENVINO_INT8],
    )
    parser.add_argument("--images", type=int, default=256, help="real images for agreement")
    parser.add_argument(
        "--train-images",
        type=int,
        default=QUANTISATION_LIMIT,
        help="real training images openvino-int8 is quantised on",
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=5, help="calls per runtime per round")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--store", type=Path, help="a model store holding trained models")
    parser.add_argument("--models", type=lambda s: s.split(","), help="their refs (with --store)")
    args = parser.parse_args()

    print(f"load average at start: {os.getloadavg()}; {os.cpu_count()} CPUs")
    rows = []
    if args.store:
        store = ModelStore(args.store)
        for ref in args.models:
            loaded = store.load(*ref.split(":", 1))
            print(f"{loaded.manifest.ref} @ {loaded.manifest.preprocess.input_size} px (trained)")
            pixels = split_calibration(loaded.manifest, "test", args.images).pixels
            quantisation = training_calibration(loaded.manifest, args.train_images)
            rows += bench_case(args, loaded, pixels, quantisation, args.store)
    else:
        images = ham_images("test", args.images)
        train_images = ham_images("train", args.train_images)
        with tempfile.TemporaryDirectory(prefix="serve-runtimes-") as tmp:
            for size in args.sizes:
                for architecture in args.architectures:
                    print(f"{architecture} @ {size} px")
                    preprocess = PreprocessConfig(input_size=size)
                    pixels = prepare_batch(images, preprocess)
                    loaded = stored_model(ModelStore(tmp), architecture, size, pixels)
                    quantisation = Calibration.of_images(train_images, preprocess, "HAM10000 train")
                    rows += bench_case(args, loaded, pixels, quantisation, Path(tmp))
    print(f"load average at end: {os.getloadavg()}")
    header = (
        f"{'arch':<10}{'px':>5} {'runtime':<14}{'b1 ms':>9}{'×keras':>8}"
        f"{'b' + str(args.batch) + ' img/s':>11}{'×keras':>8}{'top-1':>8}{'max|Δp|':>10}"
        f"{'f32 share':>10}"
    )
    print(header)
    for row in rows:
        print(
            f"{row['architecture']:<10}{row['size']:>5} {row['runtime']:<14}"
            f"{row['batch1_latency_ms']:>9.1f}{row['latency_vs_keras']:>8.2f}"
            f"{row[f'batch{args.batch}_images_per_s']:>11.1f}{row['throughput_vs_keras']:>8.2f}"
            f"{row['top1_agreement']:>8.3f}{row['max_abs_probability_diff']:>10.2g}"
            + (f"{row['recomputed_in_f32']:>10.3f}" if row["recomputed_in_f32"] is not None else "")
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
