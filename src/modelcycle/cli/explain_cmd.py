"""``modelcycle explain REF --input FILE`` (why it answered what it did) and ``--data SOURCE --global``
(which features matter overall)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from modelcycle.cli.options import JsonFlag
from modelcycle.cli.render import emit_json, format_value, say, table
from modelcycle.cli.state import open_registry
from modelcycle.errors import ConfigError, DataError


def explain(
    ref: Annotated[str, typer.Argument(help="The version to explain, e.g. breast-cancer-mlp@production.")],
    input_file: Annotated[
        Path | None,
        typer.Option(
            "--input", help='JSON: {"instances": [...]} as :predict takes them (prompts for an LM).'
        ),
    ] = None,
    method: Annotated[
        str, typer.Option("--method", help="ig, saliency, gradshap, occlusion, kernelshap or lime.")
    ] = "ig",
    target: Annotated[
        str | None, typer.Option("--target", help="The class to explain [the predicted one].")
    ] = None,
    data: Annotated[str | None, typer.Option("--data", help="Labelled data for --global.")] = None,
    global_importance: Annotated[
        bool, typer.Option("--global", help="Permutation importance over --data instead of single inputs.")
    ] = False,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Shuffles per feature for --global.")] = 5,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Features in the --global chart.")] = 10,
    out: Annotated[Path, typer.Option("--out", help="Where pictures go.")] = Path("explanations"),
    json_output: JsonFlag = False,
) -> None:
    """Attributions per feature, pixel or token (Captum), with pictures: a heatmap PNG per image, an HTML
    snippet of coloured tokens per text, a bar chart for --global."""
    from modelcycle.predictor import Predictor

    bundle = open_registry().open(ref)
    predictor = Predictor.load(bundle)
    if global_importance:
        _global(predictor, data, repeats, top_k, out, json_output)
        return
    if input_file is None:
        raise ConfigError("explain: give --input FILE (or --data SOURCE --global)")
    instances = _instances(input_file)
    from modelcycle.data.kinds import input_kind
    from modelcycle.explain import explain as explain_instances
    from modelcycle.explain.render import heatmap_png, write_html
    from modelcycle.instances import instances_dataset

    explanations = explain_instances(predictor, instances, method=method, target=target)
    form = input_kind(predictor.bundle.manifest.inputs.kind).attribution_form
    # the pixels as the model read them (channels, height, width), for the overlays
    images = instances_dataset(instances, predictor).images if form == "pixels" else None
    pictures: list[str | None] = []
    for index, explanation in enumerate(explanations):
        picture = None
        if images is not None:
            picture = str(heatmap_png(images[index], explanation, out / f"explanation-{index}.png"))
        elif form == "tokens":
            picture = str(write_html(explanation, out / f"explanation-{index}.html"))
        pictures.append(picture)
    if json_output:
        emit_json(
            [
                {**item.to_json(), "picture": picture}
                for item, picture in zip(explanations, pictures, strict=True)
            ]
        )
        return
    for index, (explanation, picture) in enumerate(zip(explanations, pictures, strict=True)):
        title = f"[{index}] {explanation.method}: prediction {explanation.prediction!r}"
        title += f", explaining {explanation.target!r}"
        if explanation.convergence_delta is not None:
            title += f" (convergence delta {explanation.convergence_delta:.2e})"
        say(title, style="bold")
        if form != "pixels":
            table(
                "attributions",
                ["feature / token", "attribution"],
                [[name, format_value(value)] for name, value in explanation.ranked()[:20]],
            )
        if picture:
            say(f"wrote {picture}")


def _instances(path: Path) -> list[Any]:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except ValueError as error:
        raise DataError(f"{path}: not JSON ({error})") from None
    instances = payload.get("instances") if isinstance(payload, dict) else payload
    if not isinstance(instances, list) or not instances:
        raise DataError(f'{path}: expected {{"instances": [...]}} or a non-empty list')
    return instances


def _global(predictor: Any, data: str | None, repeats: int, top_k: int, out: Path, json_output: bool) -> None:
    from modelcycle.config import DataConfig
    from modelcycle.data import load_dataset
    from modelcycle.explain import permutation_importance
    from modelcycle.explain.render import importance_png

    if data is None:
        raise ConfigError("--global: give --data SOURCE (labelled rows)")
    dataset = load_dataset(DataConfig(source=data, target=predictor.bundle.manifest.outputs.target))
    importance = permutation_importance(predictor, dataset, repeats=repeats)
    chart = importance_png(importance, out / "importance.png", top_k=top_k)
    if json_output:
        emit_json({**importance.to_json(), "chart": str(chart)})
        return
    say(
        f"{importance.ref}: {importance.metric} {importance.baseline:.4f} on {importance.rows} rows",
        style="bold",
    )
    table(
        f"permutation importance ({importance.repeats} repeats)",
        ["feature", "mean drop", "std"],
        [
            [item.feature, format_value(item.mean), format_value(item.std)]
            for item in importance.features[:top_k]
        ],
    )
    say(f"wrote {chart}")
