"""`nin-keras train`: build a NIN for a dataset and train it into a run folder (see nin_keras.training.train)."""

from __future__ import annotations

import re
import sys

from nin_keras.cli.options import (add_data_arguments, epoch_count, fraction, load_data_from_args,
                                   non_negative_float, positive_float, positive_int, width_multiplier)
from nin_keras.choices import OPTIMIZERS, PRECISIONS, RECIPE_NAMES, SCHEDULES, STRATEGIES
from nin_keras.formatting import safe_name

EXIT_DIVERGED = 1


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a NIN on a dataset into a run folder (resumable)",
        description="Build a NIN for the dataset and train it with model.fit. The run folder (default "
                    "runs/<dataset>-<variant>) gets model.keras (best), history.csv, curves.png, config.json, "
                    "backup/ and logs/. An existing folder is never overwritten silently: pass --resume to "
                    "continue an interrupted run from its last completed epoch, or --overwrite.",
    )
    add_data_arguments(parser)
    model = parser.add_argument_group("model")
    model.add_argument("--variant", metavar="V", default=None,
                       help="NIN variant: cifar, mnist, imagenet, d2l (default: mnist for 1-channel images, "
                            "cifar otherwise); its layers, at the dataset's image size")
    model.add_argument("--width", metavar="W", type=width_multiplier, default=1.0,
                       help="width multiplier of the hidden layers (default 1.0)")
    model.add_argument("--no-batch-norm", action="store_true",
                       help="the paper's network without BatchNormalization (the paper recipe then uses lr 0.01)")
    fit = parser.add_argument_group("training")
    fit.add_argument("--epochs", metavar="N", type=epoch_count, required=True, help="epochs of the whole run")
    fit.add_argument("--recipe", choices=RECIPE_NAMES, default=None,
                     help="budget (default: AdamW, warm-up then cosine over exactly this run, label smoothing, "
                          "augmentation chosen by the epochs and the kind of images), paper (SGD momentum 0.9, lr "
                          "0.1 with BN / 0.01 without, weight decay 1e-4, step decay x0.1, the paper's "
                          "augmentation) or adam (Adam 1e-3, cosine). --optimizer sgd alone picks paper, "
                          "--optimizer adam alone picks adam")
    fit.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help="override the recipe's optimizer")
    fit.add_argument("--lr", metavar="RATE", type=positive_float, default=None,
                     help="override the recipe's peak learning rate (used as given, at any batch size)")
    fit.add_argument("--schedule", choices=SCHEDULES, default=None, help="override the recipe's lr schedule")
    fit.add_argument("--momentum", type=non_negative_float, default=None, help="override the SGD momentum")
    fit.add_argument("--weight-decay", metavar="WD", type=non_negative_float, default=None,
                     help="override the recipe's weight decay")
    fit.add_argument("--label-smoothing", metavar="S", type=fraction, default=None,
                     help="override the recipe's label smoothing, in [0, 1)")
    fit.add_argument("--warmup-epochs", metavar="E", type=non_negative_float, default=None,
                     help="override the recipe's learning-rate warm-up, in epochs (shorter than the run; 0: none)")
    fit.add_argument("--dropout", metavar="R", type=fraction, default=None,
                     help="dropout rate while training, in [0, 1) (default: the recipe's for the budget)")
    fit.add_argument("--no-augment", action="store_true",
                     help="no random translation/flip of training images (default: what the recipe picks for the "
                          "budget and the kind of images)")
    fit.add_argument("--validation-split", metavar="F", type=fraction, default=0.1,
                     help="fraction of the training set held out for validation (default 0.1)")
    fit.add_argument("--steps-per-epoch", metavar="N", type=positive_int, default=None,
                     help="batches per epoch (default: one pass over the training split)")
    fit.add_argument("--early-stopping", metavar="N", type=positive_int, default=None,
                     help="stop after N epochs without improvement of the monitored metric")
    fit.add_argument("--deterministic", action="store_true",
                     help="TensorFlow op determinism (with --seed: repeatable runs; slower)")
    hardware = parser.add_argument_group("hardware and run folder")
    hardware.add_argument("--precision", choices=PRECISIONS, default="auto",
                     help="auto picks mixed_bfloat16 on CPUs with AVX512_BF16/AMX and bf16 GPUs, mixed_float16 on "
                          "older tensor-core GPUs, else float32 (default auto)")
    hardware.add_argument("--strategy", choices=STRATEGIES, default="auto",
                     help="one device, mirrored (all local GPUs) or multiworker (TF_CONFIG) (default auto)")
    hardware.add_argument("--jit-compile", action="store_true", help="compile the train step with XLA")
    hardware.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard logs")
    hardware.add_argument("--out", metavar="DIR", default=None, help="run folder (default runs/<name>)")
    hardware.add_argument("--name", default=None, help="run name for the default folder (default <dataset>-<variant>)")
    again = hardware.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the run in the folder from its last completed epoch")
    again.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    again.add_argument("--resume-changed-data", action="store_true",
                       help="like --resume, and continue even though the dataset or batch size differ from the "
                            "run's record in config.json (the change is recorded)")
    parser.set_defaults(handler=train_command)


def _default_name(dataset: str, variant: str) -> str:
    if dataset.startswith("folder:"):
        dataset = "folder-" + re.split(r"[\\/]", dataset[len("folder:"):].rstrip("/\\"))[-1]
    return safe_name(f"{dataset}-{variant}")


def train_command(args) -> int:
    import keras

    from nin_keras.cli import error_message
    from nin_keras.models import build_nin, get_preset
    from nin_keras.training import TrainingDivergedError, get_strategy, train
    from nin_keras.training.recipes import default_recipe, override

    # --optimizer alone picks its recipe; --lr is the peak rate as given, at any batch size
    recipe = override(args.recipe or default_recipe(args.optimizer), optimizer=args.optimizer, learning_rate=args.lr,
                      momentum=args.momentum, schedule=args.schedule, weight_decay=args.weight_decay,
                      label_smoothing=args.label_smoothing)
    if args.variant is not None:
        get_preset(args.variant)  # unknown variant: InvalidInputError naming the known ones, before any work
    # MultiWorkerMirroredStrategy must exist before any other TensorFlow op: create the strategy first.
    strategy = get_strategy(args.strategy)
    keras.utils.set_random_seed(args.seed)  # before the model's weights are initialised: repeatable runs
    data = load_data_from_args(args, augment=False, validation_split=args.validation_split)  # train() augments
    variant = args.variant or ("mnist" if data.input_shape[-1] == 1 else "cifar")
    preprocessing = None if str((data.info or {}).get("dtype", "uint8")) == "float32" else "rescale"
    model = build_nin(data.num_classes, variant=variant, input_shape=tuple(data.input_shape),
                      width_multiplier=args.width, batch_norm=not args.no_batch_norm,
                      preprocessing=preprocessing)
    name = args.name or _default_name(args.dataset, variant)
    try:
        result = train(
            model, data, epochs=args.epochs, recipe=recipe, warmup_epochs=args.warmup_epochs,
            augment=False if args.no_augment else "auto",
            dropout="auto" if args.dropout is None else args.dropout, out_dir=args.out, name=name,
            resume=args.resume or args.resume_changed_data, allow_changed_data=args.resume_changed_data,
            overwrite=args.overwrite, precision=args.precision, strategy=strategy, seed=args.seed,
            deterministic=args.deterministic, early_stopping=args.early_stopping,
            tensorboard=False if args.no_tensorboard else "auto", jit_compile=True if args.jit_compile else "auto",
            steps_per_epoch=args.steps_per_epoch,  # progress: a bar in a terminal, one line per epoch in logs
        )
    except TrainingDivergedError as error:
        if error.result is not None:
            _print_result(error.result)
        sys.stderr.write(f"nin-keras train: error: {error_message(error)}\n")
        return EXIT_DIVERGED
    _print_result(result)
    return 0


def _print_result(result) -> None:
    paths = result.paths
    lines = [f"run folder: {result.run_dir}"]
    if result.initial_epoch:
        lines.append(f"resumed after epoch {result.initial_epoch}")
    if paths.get("model"):
        best = result.best or {}
        detail = f"  (best {best['monitor']} {best['value']:.4f} at epoch {best['epoch']})" if best else ""
        lines.append(f"  model:   {paths['model']}{detail}")
    for key, label in (("history", "history"), ("curves", "curves"), ("config", "config")):
        if paths.get(key):
            lines.append(f"  {label + ':':<8} {paths[key]}")
    if paths.get("backup"):
        lines.append(f"  backup:  {paths['backup']}  (continue or extend with --resume)")
    if paths.get("logs"):
        lines.append(f"  logs:    {paths['logs']}  (tensorboard --logdir {paths['logs']})")
    lines.append(f"precision: {result.precision} ({result.precision_reason})")
    lines.append(f"strategy:  {result.strategy} ({result.strategy_reason})")
    if result.test:
        lines.append(f"test accuracy: {100 * result.test['accuracy']:.2f}% (loss {result.test['loss']:.4f})")
    if result.stopped != "nan":  # the CLI prints that message on stderr
        lines.append(result.message)
    print("\n".join(lines), flush=True)
