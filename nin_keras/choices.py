"""The names users choose from, as plain data that imports nothing (no Keras, no TensorFlow).

The command line offers these as `choices=` while it builds its parser, before it has quieted TensorFlow's
start-up logs, and `--help` must stay fast. Each stage that defines the things behind the names imports its
tuple from here and refuses to load if the two ever differ, so a new variant, recipe or policy is added in
both places or not at all.
"""

# NIN variants: nin_keras.models.presets.PRESETS.
VARIANT_NAMES = ("cifar", "mnist", "imagenet", "d2l")
# Training recipes: nin_keras.training.recipes.RECIPES.
RECIPE_NAMES = ("budget", "paper", "paper_no_bn", "adam")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("step", "cosine", "constant")
# Dtype policies train() can pick: nin_keras.training.precision.
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
# tf.distribute set-ups train() can use: nin_keras.training.strategy.
STRATEGIES = ("auto", "one", "mirrored", "multiworker")


def check_same(what: str, defined, names) -> None:
    """Raises ImportError when a stage's definitions and the names here disagree (a developer's mistake)."""
    if tuple(defined) != tuple(names):
        raise ImportError(f"nin_keras.choices lists {what} {tuple(names)} but they are defined as {tuple(defined)}; "
                          "keep the two in step.")
