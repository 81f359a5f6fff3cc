"""`nin-keras variants`: list the NIN presets."""


def register(subparsers) -> None:
    parser = subparsers.add_parser("variants", help="list the NIN variants (presets)")
    parser.set_defaults(handler=variants_command)


def variants_command(args) -> int:
    from nin_keras.models.presets import PRESETS

    width = max(len(name) for name in PRESETS)
    for name, preset in PRESETS.items():
        h, w, c = preset.input_shape
        print(f"{name:<{width}}  {h}x{w}x{c}  {preset.description}")
    return 0
