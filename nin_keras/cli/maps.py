"""`nin-keras maps MODEL IMAGE... [--out FILE.png]`: where the network sees each class (GAP's input maps)."""

from __future__ import annotations

from pathlib import Path

from nin_keras.checks import check_path
from nin_keras.cli import CLIError
from nin_keras.cli.options import positive_int
from nin_keras.export_layout import LABELS_FILE, read_labels

HELP = "draw the class-confidence maps (input of the GAP layer) of a .keras model for image files"
DESCRIPTION = (
    "Reads PNG/JPEG images (converted to the model's grayscale/RGB and resized to its input), prints "
    "the top classes of each, and draws each image, its predicted class's map overlaid, and the top-3 "
    "classes' maps into one PNG."
)


def register(subparsers) -> None:
    parser = subparsers.add_parser("maps", help=HELP, description=DESCRIPTION)
    parser.add_argument("model", metavar="MODEL", help="a .keras model (e.g. runs/demo/export/model.keras)")
    parser.add_argument("images", metavar="IMAGE", nargs="+", help="image files (PNG, JPEG, ...)")
    parser.add_argument("--out", metavar="FILE.png", default="confidence_maps.png",
                        help="where to write the figure (default: confidence_maps.png)")
    parser.add_argument("--labels", metavar="FILE",
                        help="class names, one a line (default: labels.txt beside MODEL, if there is one)")
    parser.add_argument("--top", metavar="K", type=positive_int, default=3, help="classes' maps per image (default: 3)")
    parser.set_defaults(handler=maps_command)


def maps_command(args) -> int:
    import nin_keras
    from nin_keras.viz import load_images, plot_confidence_maps
    from nin_keras.viz.maps import find_gap_layer, predict_probabilities

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise CLIError(f"--out must name a .png file; received {args.out!r}.")
    model = nin_keras.load_model(args.model)
    find_gap_layer(model)  # a clear error before any image is read
    input_shape = tuple(model.inputs[0].shape[1:])
    images = load_images(args.images, input_shape)
    num_classes = int(model.outputs[0].shape[-1])
    class_names = _class_names(args.labels, Path(args.model), num_classes)

    probabilities = predict_probabilities(model, images)
    top = min(args.top, num_classes)
    for path, probs in zip(args.images, probabilities):
        order = probs.argsort()[::-1][:top]
        ranked = ", ".join(f"{class_names[i]} {probs[i]:.1%}" for i in order)
        print(f"{path}: {ranked}")
    plot_confidence_maps(model, images, out, class_names, top_k=top, max_images=len(images))
    print(f"Wrote {out}")
    return 0


def _class_names(labels_path, model_path: Path, num_classes: int) -> list[str]:
    if labels_path is None:
        beside = model_path.parent / LABELS_FILE
        if not beside.is_file():
            return [str(i) for i in range(num_classes)]
        labels_path = beside
    labels_path = check_path("Labels file", labels_path, kind="file")
    names = read_labels(labels_path)
    if len(names) != num_classes:
        raise CLIError(f"{labels_path} has {len(names)} class names but the model has {num_classes} classes.")
    return names
