"""Plant one bug of tools/blind_spots.md, run the test that should catch it, revert.

Usage, from the repository root on a CLEAN working tree (not in CI)::

    PYTHONPATH=. python tools/plant_bugs.py shuffle     # or: all

It checks that the original text occurs exactly once, writes the bug, runs the test(s)
with ``pytest -x``, prints the first assertion lines, and always restores the file with
``git checkout -- FILE``. A bug that passes its test prints ``NOT CAUGHT``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BLIND = "tests/test_blind_spots.py::"
CONV_BIAS = 'y = y + params["b"].reshape((1,) * (y.ndim - 1) + (features,))'
FLAT = "jax.tree.flatten((params, model_state))"
FRESH = "jax.tree.flatten((model.init(jax.random.key(0), (-1, *feature_shape))[1], model_state))"

# name: (file, original text, planted text, count of the original, tests)
BUGS: dict[str, tuple[str, str, str, int, str]] = {
    "shuffle": ("jnn/train/_epoch.py", "shuffle_slots(words, nb",
                "shuffle_slots(jnp.zeros_like(words), nb", 1,
                BLIND + "test_fit_shuffles_every_epoch_by_its_key"),
    "dropout": ("jnn/train/_step.py", "dropout_key = jax.random.fold_in(state.key, state.step)",
                "dropout_key = state.key", 1,
                BLIND + "test_dropout_mask_changes_every_step_and_repeats_for_the_same_key_"
                "and_step"),
    "rmsprop": ("jnn/train/_state.py", '"rmsprop": (optax.rmsprop,', '"rmsprop": (optax.adam,', 1,
                BLIND + "test_each_optimizer_name_is_the_optax_transformation_it_names"),
    "batchnorm": ("jnn/layers/_norm.py", "return _affine(params, y), new_state",
                  "return y, new_state", 1,
                  BLIND + "test_batch_norm_uses_scale_bias_and_running_statistics"),
    "rmsnorm": ("jnn/layers/_norm.py",
                "return _affine(params, (xf * lax.rsqrt(ms + epsilon)).astype(x.dtype))",
                "return (xf * lax.rsqrt(ms + epsilon)).astype(x.dtype)", 1,
                BLIND + "test_layer_norm_and_rms_norm_use_their_scale_and_bias"),
    # ConvTranspose is the second layer of _conv.py that adds its bias this way
    "conv_transpose_bias": ("jnn/layers/_conv.py", CONV_BIAS, "y = y", 2,
                            BLIND + "test_conv_transpose_with_bias_matches_a_handwritten_"
                            "reference"),
    "activation": ("jnn/layers/_activations.py", '"swish": jax.nn.silu', '"swish": jax.nn.mish', 1,
                   BLIND + "test_every_activation_name_is_its_jax_nn_function"),
    "foreign_leaf": ("jnn/_container.py", "bad = foreign_value(content)", "bad = None", 1,
                     "tests/test_checkpoint.py::test_payload_holds_no_code"),
    "export_fresh": ("jnn/export.py", FLAT, FRESH, 1,
                     "tests/test_export.py::test_load_in_fresh_process_matches_predict "
                     "tests/test_cli.py::test_predict_formats "
                     "tests/test_serve.py::test_single_example_and_batch"),
    "kfold": ("jnn/experiments/_folds.py", "np.arange(n) % k", "(np.arange(n) + 1) % k", 1,
              BLIND + "test_kfold_matches_scikit_learn_kfold_semantics"),
    "batch_means": ("jnn/train/_logs.py", "total = jnp.sum(w)",
                    "total = jnp.ones_like(jnp.sum(w))", 1,
                    BLIND + "test_epoch_logs_are_weighted_means_over_examples_not_means_"
                    "of_batch_means"),
}  # fmt: skip


def plant(name: str) -> bool:
    """True if the planted bug made its test fail."""
    path, old, new, count, tests = BUGS[name]
    src = Path(path).read_text()
    assert src.count(old) == count, f"{name}: {path} changed; update the bug"
    at = src.rfind(old) if count > 1 else src.find(old)  # the last occurrence
    Path(path).write_text(src[:at] + new + src[at + len(old) :])
    try:
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-n", "0",
               "--tb=short", *tests.split()]  # fmt: skip
        run = subprocess.run(cmd, capture_output=True, text=True)
    finally:
        subprocess.run(["git", "checkout", "--", path], check=True)
    caught = run.returncode == 1  # pytest: tests ran and some failed
    errors = [line for line in run.stdout.splitlines() if line.startswith("E ")][:4]
    print(f"### {name}: {'caught' if caught else 'NOT CAUGHT'}", *errors, sep="\n")
    return caught


if __name__ == "__main__":
    names = list(BUGS) if sys.argv[1:] == ["all"] else sys.argv[1:]
    sys.exit(0 if all([plant(n) for n in names]) else 1)
