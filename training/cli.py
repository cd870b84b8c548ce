"""The ``medrobust`` command line: train, inspect and use stored models.

Starting it must stay cheap (``medrobust --help`` in well under a second): this module imports
no ML stack (TensorFlow, Keras, OpenCV, pydicom) at the top; each command imports what it needs.
TensorFlow's C++ and absl log lines are silenced unless ``--verbose`` is given, before any
command can import TensorFlow; progress bars (Keras, tqdm) still show.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

if TYPE_CHECKING:
    from training.data.registry import DatasetSpec
    from training.store import ModelStore

app = typer.Typer(
    help="Robust medical image classifiers: train, inspect, predict.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(
    help="Inspect stored models, set aliases and task defaults.", no_args_is_help=True
)
app.add_typer(models_app, name="models")

StoreOption = Annotated[
    Path | None,
    typer.Option(
        "--store",
        help="model store directory (default: $MEDROBUST_STORE_DIR, else var/models)",
        show_default=False,
    ),
]
DEFAULT_STORE = None  # training.settings.CoreSettings.store_dir: the one the service reads too
# TF_CPP_MIN_LOG_LEVEL 2 drops TensorFlow's C++ INFO and WARNING lines (oneDNN notices, CPU
# feature hints); errors still show
QUIET_TF_LOG_LEVEL = "2"
_verbose = False  # --verbose, set by the app's callback before any command runs


def _store(path: Path | None) -> ModelStore:
    """The store at ``path``, else the configured one (``MEDROBUST_STORE_DIR``)."""
    from training.settings import CoreSettings
    from training.store import ModelStore

    return ModelStore(path if path is not None else CoreSettings().store_dir)


def _quiet_backend(verbose: bool) -> None:
    """Silence TensorFlow / absl logging unless ``verbose``; a value the user set is kept."""
    global _verbose
    _verbose = verbose
    if verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_TF_LOG_LEVEL)
    # absl's Python logger and TensorFlow's own: warnings about tracing and compiled metrics
    for name in ("absl", "tensorflow"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _load_backend() -> None:
    """Import Keras (and its backend) first thing in a command that runs a model; unless
    ``--verbose``, with the C++ start-up lines silenced (see :func:`_stderr_closed`)."""
    with nullcontext() if _verbose else _stderr_closed():
        import keras  # noqa: F401


@contextmanager
def _stderr_closed() -> Iterator[None]:
    """File descriptor 2 points at /dev/null inside: for C++ code that writes there directly.

    TensorFlow 2.21 logs its oneDNN and CPU-feature notices through absl before absl's log is
    initialised, and those lines ignore TF_CPP_MIN_LOG_LEVEL. An import error still surfaces: the
    exception propagates after the descriptor is restored.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@app.callback()
def _options(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="show TensorFlow and absl log output")
    ] = False,
) -> None:
    """Robust medical image classifiers: train, inspect, predict."""
    _quiet_backend(verbose)


def _parse_overrides(pairs: list[str]) -> dict[str, Any]:
    import yaml

    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--set")
        overrides[key] = yaml.safe_load(value)
    return overrides


@app.command()
def train(
    config: Annotated[Path | None, typer.Option(help="YAML/JSON training spec")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="override: train.epochs=5")] = [],  # noqa: B006
    name: Annotated[str | None, typer.Option(help="model name (without --config)")] = None,
    dataset: Annotated[str | None, typer.Option(help="dataset kind, e.g. ham10000")] = None,
    data: Annotated[
        str | None, typer.Option(help="dataset path (relative: MEDROBUST_DATA_DIR)")
    ] = None,
    architecture: Annotated[str, typer.Option(help="baseline | attention")] = "baseline",
    input_size: Annotated[int, typer.Option(help="square input side")] = 224,
    epochs: Annotated[int | None, typer.Option(help="maximum epochs")] = None,
    store: StoreOption = DEFAULT_STORE,
    checkpoint_dir: Annotated[Path | None, typer.Option(help="resumable checkpoints")] = None,
) -> None:
    """Train a model (resuming from its checkpoint directory) and store it as a new version."""
    _load_backend()
    from training.config import ModelOptions, TrainConfig, TrainingSpec, apply_overrides, load_spec
    from training.data.registry import DatasetSpec

    overrides = _parse_overrides(set_)
    if config is not None:
        spec = load_spec(config, overrides)
    elif name and dataset and data:
        raw: dict[str, Any] = {
            "name": name,
            "dataset": DatasetSpec(kind=dataset, path=data).model_dump(),
            "model": ModelOptions(architecture=architecture).model_dump(),
            "preprocess": {"input_size": input_size},
            "train": TrainConfig().model_dump() | ({"epochs": epochs} if epochs else {}),
        }
        spec = TrainingSpec.model_validate(apply_overrides(raw, overrides))
    else:
        raise typer.BadParameter("give --config, or --name, --dataset and --data")
    from training.workflow import train_and_store

    checkpoints = checkpoint_dir or Path("var/checkpoints") / spec.name
    manifest = train_and_store(spec, _store(store), checkpoints, verbose=1)
    typer.echo(
        json.dumps(
            {
                "model": manifest.ref,
                "weights_sha256": manifest.weights_sha256,
                "best_epoch": manifest.best_epoch,
                "metrics": {k: v.model_dump() for k, v in manifest.metrics.items()},
            },
            indent=1,
        )
    )


@models_app.command("list")
def models_list(store: StoreOption = DEFAULT_STORE) -> None:
    """One line per stored model version."""
    for manifest in _store(store).list():
        validation = manifest.metrics.get("validation")
        score = f"val_bal_acc={validation.balanced_accuracy:.3f}" if validation else ""
        aliases = ",".join(manifest.aliases)
        typer.echo(
            f"{manifest.ref:<32} {manifest.architecture.architecture:<10} "
            f"{manifest.weights_sha256[:12]} {score} {aliases}".rstrip()
        )


@models_app.command("show")
def models_show(ref: str, store: StoreOption = DEFAULT_STORE) -> None:
    """The full manifest of NAME[:VERSION|ALIAS] as JSON."""
    from training.model_ref import ModelRef

    parsed = ModelRef.parse(ref)
    typer.echo(_store(store).manifest(parsed.name, parsed.selector).model_dump_json(indent=1))


@models_app.command("alias")
def models_alias(name: str, version: int, alias: str, store: StoreOption = DEFAULT_STORE) -> None:
    """Point ALIAS of NAME at VERSION."""
    _store(store).set_alias(name, alias, version)
    typer.echo(f"{name}:{alias} -> {version}")


@models_app.command("default")
def models_default(task: str, ref: str, store: StoreOption = DEFAULT_STORE) -> None:
    """Make REF (NAME[:VERSION|ALIAS]) the model a request naming TASK gets; a running API
    sees it on its next request (MEDROBUST_DEFAULT_MODELS, where set, wins for its tasks)."""
    from training.model_ref import ModelRef
    from training.task_defaults import set_task_default

    opened = _store(store)
    parsed = ModelRef.parse(ref)
    version = opened.resolve(parsed.name, parsed.selector)  # a typo fails here, not per request
    set_task_default(opened.root, task, ref)
    typer.echo(f"task {task} -> {ref} (now {parsed.name}:{version})")


@app.command()
def quickstart(
    store: StoreOption = DEFAULT_STORE,
    checkpoint_dir: Annotated[Path, typer.Option(help="resumable checkpoints")] = Path(
        "var/checkpoints"
    ),
    input_size: Annotated[int, typer.Option(help="square input side (min 32)")] = 48,
    epochs: Annotated[int, typer.Option(help="epochs per model")] = 3,
    limit_per_split: Annotated[
        int, typer.Option(help="stratified cap on the train, val and test images each")
    ] = 200,
) -> None:
    """Train small demo models on the staged HAM10000 data (a few minutes on a CPU): derm
    (attention) and derm-baseline, alias production, default of task derm; then print the curl
    to try. Where the data is absent, say so and train nothing."""
    _load_backend()
    from training.quickstart import (
        QuickstartOptions,
        example_image,
        missing_data,
        run_quickstart,
        try_it,
    )

    options = QuickstartOptions(
        input_size=input_size, epochs=epochs, limit_per_split=limit_per_split
    )
    problem = missing_data(options)
    if problem is not None:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(3)
    opened = _store(store)
    run_quickstart(options, opened, checkpoint_dir, lambda line: typer.echo(f"[quickstart] {line}"))
    typer.echo(
        f"\nDone: models in {opened.root}. Start the API (make run) if it is not running, then:\n\n"
        f"  {try_it(example_image(options) or 'lesion.jpg')}\n\n"
        "(with MEDROBUST_API_TOKENS set, add -H 'Authorization: Bearer TOKEN'; the API must "
        f"read this store: MEDROBUST_STORE_DIR={opened.root})"
    )


@app.command()
def predict(
    image: Path,
    model: Annotated[str, typer.Option(help="NAME[:VERSION|ALIAS]")],
    robustness: Annotated[
        str, typer.Option(help="none | flip | certify | all: add the robustness block")
    ] = "none",
    noise_sigma: Annotated[
        float | None,
        typer.Option(help="certify with this σ (pixels); needed for a model trained without"),
    ] = None,
    certify_n: Annotated[int, typer.Option(help="certify: estimation samples")] = 1000,
    flip_steps: Annotated[int, typer.Option(help="flip: attack steps per run")] = 20,
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Class probabilities for one image file, as JSON; with --robustness, the same block as
    the API's (smallest flipping ε in L∞ and L2, certified L2 radius)."""
    _load_backend()
    from training.model_ref import ModelRef
    from training.predict import predict_images
    from training.preprocess import prepare_image, read_image
    from training.trust.answer import (
        NoiseSigmaMissing,
        Robustness,
        default_plan,
        robustness_answer,
    )

    if robustness not in ("none", "flip", "certify", "all"):
        raise typer.BadParameter("choose none, flip, certify or all", param_hint="--robustness")
    ref = ModelRef.parse(model)
    loaded = _store(store).load(ref.name, ref.selector)
    decoded = read_image(str(image))
    answer = predict_images(loaded, [decoded])[0].model_dump(mode="json")
    if robustness != "none":
        try:
            plan = default_plan(
                loaded.manifest,
                cast(Robustness, robustness),  # checked above
                noise_sigma,
                flip={"steps": flip_steps},
                smoothing={"n": certify_n},
            )
        except NoiseSigmaMissing as exc:
            raise typer.BadParameter(str(exc), param_hint="--noise-sigma") from exc
        pixels = prepare_image(decoded, loaded.manifest.preprocess)
        block = robustness_answer(loaded.model, loaded.manifest, pixels, plan).block
        answer["robustness"] = block.model_dump(mode="json")
    typer.echo(json.dumps(answer, indent=1))


def _split_list(value: str) -> list[str]:
    return [item for item in value.replace(",", " ").split() if item]


@app.command()
def evaluate(
    models: Annotated[str, typer.Option(help="model refs to compare: A,B (NAME[:VERSION])")],
    data: Annotated[str, typer.Option(help="dataset path (relative: MEDROBUST_DATA_DIR)")],
    out: Annotated[Path, typer.Option(help="report .json; .md and .png are written beside it")],
    dataset: Annotated[str, typer.Option(help="dataset kind")] = "ham10000",
    split: Annotated[str, typer.Option(help="train | val | test")] = "test",
    split_mode: Annotated[str, typer.Option(help="source | group")] = "group",
    limit: Annotated[int | None, typer.Option(help="stratified cap on the images")] = None,
    attacks: Annotated[str, typer.Option(help="comma-separated attack names")] = "fgsm,pgd",
    eps: Annotated[
        str,
        typer.Option(
            help="comma-separated ε in pixel units of 255; 64 is the masking sanity point"
        ),
    ] = "1,2,4,8,64",
    steps: Annotated[int, typer.Option(help="steps of iterative attacks")] = 10,
    batch_size: Annotated[int, typer.Option(help="images per attack batch")] = 32,
    seed: Annotated[int, typer.Option(help="random starts are drawn from it")] = 0,
    explain: Annotated[
        str | None, typer.Option(help="gradcam | gradcam++: also compare clean vs attacked maps")
    ] = None,
    trust: Annotated[
        str,
        typer.Option(
            help="certify,flip: also write OUT_trust.json/.md/.png (certified accuracy vs "
            "radius; smallest flipping ε distribution)"
        ),
    ] = "",
    trust_limit: Annotated[int, typer.Option(help="stratified images for --trust")] = 20,
    trust_n: Annotated[int, typer.Option(help="--trust certify: estimation samples")] = 1000,
    noise_sigma: Annotated[
        float | None, typer.Option(help="--trust certify: σ for models trained without noise")
    ] = None,
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Attack stored models over an ε sweep; write a JSON report, a markdown table, a PNG curve."""
    _load_backend()
    from tqdm import tqdm

    from training.attacks.registry import takes_parameter
    from training.data.registry import DatasetSpec
    from training.robustness.render import markdown_table, robustness_curve_png
    from training.robustness.report import build_report
    from training.robustness.run import evaluate_stored
    from training.robustness.spec import AttackSpec, EvaluationSpec
    from training.store import code_version

    spec = EvaluationSpec(
        attacks=[
            AttackSpec(name=name, params={"steps": steps} if takes_parameter(name, "steps") else {})
            for name in _split_list(attacks)
        ],
        epsilons=[float(e) for e in _split_list(eps)],
        batch_size=batch_size,
        seed=seed,
        explain=explain,
    )
    dataset_spec = DatasetSpec(kind=dataset, path=data, split=split_mode)
    with tqdm(total=1, desc="evaluate", unit="batch") as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        outcomes = evaluate_stored(
            _store(store),
            _split_list(models),
            dataset_spec,
            spec,
            split=split,
            limit=limit,
            progress=progress,
        )
    report = build_report(outcomes, code_version())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.model_dump_json(indent=1))
    out.with_suffix(".md").write_text(markdown_table(report))
    out.with_suffix(".png").write_bytes(robustness_curve_png(report))
    typer.echo(markdown_table(report))
    if trust:
        _evaluate_trust(
            _split_list(models), dataset_spec, split, trust, trust_limit, trust_n, noise_sigma,
            out, store, seed,
        )  # fmt: skip


def _evaluate_trust(
    refs: list[str],
    dataset_spec: DatasetSpec,
    split: str,
    what: str,
    limit: int,
    n: int,
    noise_sigma: float | None,
    out: Path,
    store: Path | None,
    seed: int,
) -> None:
    """The trust section of ``medrobust evaluate`` (training.trust.report)."""
    import numpy as np

    from training.model_ref import ModelRef
    from training.pipeline import prepared_arrays
    from training.robustness.run import evaluation_samples
    from training.trust import FlipSpec
    from training.trust.answer import NoiseSigmaMissing
    from training.trust.report import evaluate_trust, markdown, write

    kinds = set(_split_list(what))
    if not kinds <= {"certify", "flip"}:
        raise typer.BadParameter("choose from certify, flip", param_hint="--trust")
    loaded = [_store(store).load(r.name, r.selector) for r in map(ModelRef.parse, refs)]
    data, indices = evaluation_samples(dataset_spec, split, limit, seed)
    subset = data.subset(indices)
    pixels = prepared_arrays(subset, loaded[0].manifest.preprocess)
    try:
        report = evaluate_trust(
            loaded,
            pixels,
            np.asarray(subset.labels),
            certify_spec={"n": n, "seed": seed} if "certify" in kinds else None,
            flip_spec=FlipSpec(seed=seed) if "flip" in kinds else None,
            noise_sigma=noise_sigma,
        )
    except NoiseSigmaMissing as exc:
        raise typer.BadParameter(str(exc), param_hint="--noise-sigma") from exc
    write(report, out.with_name(f"{out.stem}_trust.json"))
    typer.echo(markdown(report))


@app.command()
def explain(
    image: Path,
    model: Annotated[str, typer.Option(help="NAME[:VERSION|ALIAS]")],
    out: Annotated[Path, typer.Option(help="PNG panel: overlays side by side")],
    method: Annotated[str, typer.Option(help="gradcam | gradcam++")] = "gradcam",
    class_name: Annotated[str | None, typer.Option("--class", help="class to explain")] = None,
    attack: Annotated[str | None, typer.Option(help="explain the attacked image too")] = None,
    eps: Annotated[float, typer.Option(help="attack ε in pixel units of 255")] = 4.0,
    steps: Annotated[int, typer.Option(help="steps of iterative attacks")] = 10,
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Grad-CAM (and attention maps) for one image, optionally next to its attacked version."""
    _load_backend()
    from training.attacks import make_attack
    from training.attacks.registry import takes_parameter
    from training.explain.image import explain_image
    from training.model_ref import ModelRef
    from training.preprocess import read_image

    ref = ModelRef.parse(model)
    loaded = _store(store).load(ref.name, ref.selector)
    class_index = None
    if class_name is not None:
        if class_name not in loaded.manifest.class_names:
            raise ValueError(f"unknown class {class_name!r}; {loaded.manifest.class_names}")
        class_index = loaded.manifest.class_names.index(class_name)
    adversary = None
    if attack is not None:
        params = {"steps": steps} if takes_parameter(attack, "steps") else {}
        adversary = make_attack(attack, epsilon=eps, **params)
    result = explain_image(loaded, read_image(str(image)), method, class_index, adversary)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(result.panel_png())
    summary = {
        "panel": str(out),
        "overlays": list(result.overlays),
        "method": result.method,
        "layer": result.layer,
        "class_explained": result.class_explained,
        "prediction": result.prediction.model_dump(),
        "adversarial_prediction": (
            result.adversarial_prediction.model_dump() if result.adversarial_prediction else None
        ),
        "comparison": result.comparison.model_dump() if result.comparison else None,
        "attack": result.attack,
    }
    typer.echo(json.dumps(summary, indent=1))


@app.command()
def reproduce(
    config: Annotated[Path, typer.Option(help="study YAML, e.g. configs/reproduce-cpu.yaml")],
    out: Annotated[
        Path | None, typer.Option(help="results folder (default docs/results/reproduce-NAME)")
    ] = None,
    work: Annotated[
        Path | None,
        typer.Option(help="models, checkpoints, cached outcomes (default var/reproduce/NAME)"),
    ] = None,
    task: Annotated[list[str], typer.Option(help="only these tasks (repeatable)")] = [],  # noqa: B006
    set_: Annotated[list[str], typer.Option("--set", help="override: weights=null")] = [],  # noqa: B006
) -> None:
    """Train, attack and explain every (task, variant, seed) of a study; resumes if stopped."""
    _load_backend()
    from datetime import UTC, datetime

    from training.reproduce import StudyFolders, load_study, run_study

    overrides = _parse_overrides(set_)
    study = load_study(config, overrides)
    folders = StudyFolders(
        work=work or Path("var/reproduce") / study.name,
        out=out or Path("docs/results") / f"reproduce-{study.name}",
    )

    def log(message: str) -> None:
        typer.echo(f"{datetime.now(UTC):%H:%M:%S} {message}")

    run_study(study, folders, config.read_text(), task or None, log, overrides)


def main() -> None:
    """Errors a user can fix are printed as one line, not a traceback."""
    try:
        app()
    # DatasetError, ModelRefError, ModelStoreError are among these (ValueError, LookupError)
    except (FileNotFoundError, LookupError, ValueError, RuntimeError) as error:
        typer.echo(f"error: {error}", err=True)
        raise SystemExit(2) from error


if __name__ == "__main__":
    main()
