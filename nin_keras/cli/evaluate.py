"""`nin-keras evaluate ARTIFACT --dataset NAME`: accuracy of any artifact (.keras, SavedModel, .tflite)."""

from __future__ import annotations

import json
import types

from nin_keras.cli.options import add_data_arguments, load_data_from_args, positive_int


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="accuracy of a .keras, SavedModel or .tflite artifact on a dataset's test split",
        description="Evaluates ARTIFACT (a .keras file, a SavedModel folder or any .tflite: float32, float16, "
                    "dynamic-range, int8 or uint8 I/O) on the test split of a dataset. The last line of the "
                    "output is accuracy=<number>; with --json the output is one JSON object.",
    )
    parser.add_argument("artifact", metavar="ARTIFACT", help="a .keras file, SavedModel folder or .tflite file")
    add_data_arguments(parser)
    parser.add_argument("--reference", metavar="ARTIFACT", default=None,
                        help="also report top-1 agreement with this artifact (e.g. the model.keras it came from)")
    parser.add_argument("--limit", metavar="N", type=positive_int, default=None,
                        help="evaluate at most N test examples (default: all)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=evaluate_command)


def shape_only_model(runner):
    """An object with the input/output shapes of `runner`, for `load_data_from_args(model=...)`."""
    return types.SimpleNamespace(
        name=runner.name,
        inputs=[types.SimpleNamespace(shape=(None, *runner.input_shape))],
        outputs=[types.SimpleNamespace(shape=(None, runner.num_classes))],
    )


def evaluate_command(args) -> int:
    from nin_keras.verification import evaluate, load_artifact

    runner = load_artifact(args.artifact)  # a bad artifact fails before any data is read
    data = load_data_from_args(args, model=shape_only_model(runner), validation_split=0.0)
    result = evaluate(runner, data, reference=args.reference, limit=args.limit, batch_size=args.batch_size,
                      progress=not args.no_progress)
    result["dataset"] = data.name
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['artifact']} ({result['kind']}, {result['precision']}) on {data.name}, "
          f"{result['num_examples']} test examples")
    if result["top5_accuracy"] is not None:
        print(f"top-5 accuracy: {result['top5_accuracy']:.4f}")
    print(f"mean confidence: {result['mean_confidence']:.4f}")
    if result["agreement"] is not None:
        print(f"agreement={result['agreement']:.4f}  (top-1 equal to {args.reference})")
    print(f"accuracy={result['accuracy']:.4f}")
    return 0
