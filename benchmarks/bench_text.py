"""text-minilm (all-MiniLM-L6-v2 fine-tuned with LoRA) vs a TF-IDF + logistic-regression baseline, trained
and tested on the same split of the same Rotten Tomatoes sample, in the same run.

Run: .venv/bin/python benchmarks/bench_text.py  → benchmarks/results/text-minilm.md
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine  # noqa: E402

from modelcycle.config import load_config  # noqa: E402
from modelcycle.data import load_dataset, split_dataset  # noqa: E402
from modelcycle.pipeline import train  # noqa: E402
from modelcycle.registry import Registry  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def tfidf_baseline(config: object) -> tuple[float, float]:
    """Test accuracy and seconds of TF-IDF (word 1-2 grams) + logistic regression, C chosen on valid."""
    dataset = load_dataset(config.data, seed=config.seed)
    split = split_dataset(dataset, config.data.split, config.seed)
    texts, labels = dataset.frame["text"].to_numpy(), dataset.frame["label"].to_numpy()
    started = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    train_x = vectorizer.fit_transform(texts[split.train])
    best = max(
        (
            LogisticRegression(C=c, max_iter=2000).fit(train_x, labels[split.train])
            for c in (0.3, 1.0, 3.0, 10.0)
        ),
        key=lambda model: accuracy_score(
            labels[split.valid], model.predict(vectorizer.transform(texts[split.valid]))
        ),
    )
    accuracy = accuracy_score(labels[split.test], best.predict(vectorizer.transform(texts[split.test])))
    return float(accuracy), time.perf_counter() - started


def main() -> None:
    config = load_config(ROOT / "examples" / "text-minilm.yaml")
    baseline_accuracy, baseline_seconds = tfidf_baseline(config)
    with tempfile.TemporaryDirectory() as home:
        started = time.perf_counter()
        result = train(config, Registry(home))
        seconds = time.perf_counter() - started
    assert result is not None
    ours = result.metrics["test"]["accuracy"]
    rows = len(load_dataset(config.data, seed=config.seed))
    lines = [
        "# text-minilm vs TF-IDF + logistic regression",
        "",
        f"Machine: {describe_machine()}",
        "",
        f"Built-in Rotten Tomatoes snippets (fresh / rotten), a seeded sample of {rows} rows, split "
        f"{1 - config.data.split.valid - config.data.split.test:.0%} / {config.data.split.valid:.0%} / "
        f"{config.data.split.test:.0%} (train / valid / test) — the same rows for both models.",
        "",
        "| model | test accuracy | wall time (s) |",
        "| --- | --- | --- |",
        f"| TF-IDF (1-2 grams) + logistic regression, C picked on valid | {baseline_accuracy:.4f} | "
        f"{baseline_seconds:.1f} |",
        f"| text-minilm: MiniLM-L6 + LoRA r=8, {config.train.epochs} epochs (examples/text-minilm.yaml) | "
        f"{ours:.4f} | {seconds:.0f} |",
        "",
        f"Difference: {100 * (ours - baseline_accuracy):+.1f} accuracy points for the pretrained encoder.",
        "",
    ]
    output = ROOT / "benchmarks" / "results" / "text-minilm.md"
    output.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
