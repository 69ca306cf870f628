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
        "- Method: IAAT (Balaji, Goldstein and Hoffman",
        f"Clean accuracy: {results['clean_accuracy']:.4f}",
        f"suite `smoke` at eps 0.3000: {suite['robust_accuracy']:.4f} (apgd-ce",
        f"Mean {table.mean():.4f}, max {table.max():.4f}",
        "## Known limits",
    ):
        assert expected in card, expected
    assert "IAAT: gamma 0.075, beta 0.3" in card


def test_a_card_of_a_held_out_run_names_what_it_trained_on_and_what_it_was_evaluated_on():
    from iaat_jax.configs import default
    from iaat_jax.evaluation import model_card

    config = default.get_config()
    config.validation_examples = 1000
    results = {"num_examples": 1000, "clean_accuracy": 0.9, "checkpoint_step": 350}
    results["split"] = "train[3000:]"
    table = np.concatenate([np.full(3000, 0.2, np.float32), np.zeros(1000, np.float32)])
    card = model_card.model_card(config, results, table, seconds=60.0)
    assert "(3,000 examples, the last 1,000 held out), tested on `train[3000:]`" in card
    assert "Mean 0.2000, max 0.2000, p10 / p50 / p90 0.2000" in card  # the held-out 0s left out
    assert "1,000 examples of `train[3000:]`" in card
