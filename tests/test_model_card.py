"""MODEL_CARD.md, written by --mode=evaluate, says what the run is and what it measured."""

import jax
import numpy as np

from iaat_jax.trained import load


def test_evaluation_writes_a_model_card_of_the_run(trained_runs):
    workdir, results = trained_runs["iaat"]
    card = (workdir / "MODEL_CARD.md").read_text()
    classifier = load(str(workdir))
    parameters = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(classifier.variables["params"]))
    table = np.load(workdir / "epsilon_table.npy")
    suite = results["autoattack"][0]
    for expected in (
        f"`small_cnn`, {parameters:,} parameters",
        "trained on the `train` split (4,000 examples)",
        "Instance Adaptive Adversarial Training",
        f"Clean accuracy: {results['clean_accuracy']:.4f}",
        f"suite `smoke` at eps 0.3000: {suite['robust_accuracy']:.4f} (apgd-ce",
        f"Mean {table.mean():.4f}, max {table.max():.4f}",
        "## Known limits",
    ):
        assert expected in card, expected
    assert "IAAT: gamma 0.075, beta 0.3" in card
