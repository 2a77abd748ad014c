"""``explain``: why a version answered what it did, per input, with Captum's attribution methods.

Every kind of model gets the form its users think in: tabular attributions per named feature (one-hot columns
summed back into their feature), image attributions per pixel (a heatmap), text attributions per token
(computed on the embedding layer, since token ids cannot be interpolated), and for language models the
attribution of the chosen next token to each prompt token. The baseline — what "no information" means — is
the training mean for tabular and image inputs (zero after the bundle's standardisation) and the padding
token for text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from modelcycle.data.corpus import CorpusBlocks
from modelcycle.data.kinds import InputKind, input_kind
from modelcycle.data.text import TextEncoder
from modelcycle.errors import ConfigError, RequestError
from modelcycle.instances import instance_tensors
from modelcycle.predictor import Predictor

METHODS = ("ig", "saliency", "gradshap", "occlusion", "kernelshap", "lime")
GROUP_METHODS = ("occlusion", "kernelshap", "lime")  # one value per feature group, not per column
IG_STEPS = 50
SURROGATE_SAMPLES = 200  # KernelSHAP / LIME: random coalitions of feature groups one input's linear fit sees,
SURROGATE_SEED = 0  # drawn from this seed for every input, so the same input gets the same attributions
GRADSHAP_SAMPLES = 20
PERTURBATIONS_PER_EVAL = 16  # occlusion / KernelSHAP / LIME: perturbed copies per forward pass (one batch)
Tensors = dict[str, np.ndarray]


@dataclass(frozen=True)
class Explanation:
    """One input's explanation. ``attributions``: {feature: value} (tabular), [[token, value], …] (text and
    language models) or rows × columns of per-pixel values (images, channels summed)."""

    ref: str
    kind: str
    method: str
    baseline: str
    target: str | None
    target_index: int
    prediction: str | float | None
    probability: float | None
    attributions: Any
    convergence_delta: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def ranked(self) -> list[tuple[str, float]]:
        """Features or tokens by the size of their attribution, largest first (tabular and text)."""
        pairs = self.attributions.items() if isinstance(self.attributions, dict) else self.attributions
        return sorted(((str(name), float(value)) for name, value in pairs), key=lambda item: -abs(item[1]))


def explain(
    predictor: Predictor, instances: Sequence[Any], *, method: str = "ig", target: str | None = None
) -> list[Explanation]:
    """Explain instances given in the caller's terms (as ``:predict`` takes them; prompts for a language
    model)."""
    if input_kind(predictor.bundle.manifest.inputs.kind).attributed_through == "prompt":
        return [_explain_prompt(predictor, prompt, method, target) for prompt in _prompts(instances)]
    return explain_tensors(
        predictor, instance_tensors(list(instances), predictor), method=method, target=target
    )


def explain_tensors(
    predictor: Predictor, tensors: Tensors, *, method: str = "ig", target: str | None = None
) -> list[Explanation]:
    """Explain model-ready tensors (what ``/v2/.../infer`` takes), one explanation per row."""
    if method not in METHODS:
        raise ConfigError(
            f"unknown method '{method}'",
            hint=f"set method to one of {', '.join(METHODS)}",
            parameter="method",
        )
    model = predictor.model
    kind = input_kind(predictor.bundle.manifest.inputs.kind)
    if kind.attributed_through == "prompt":
        raise RequestError(
            f"{predictor.bundle.ref}: a language model is explained from prompts, not tensors",
            hint='POST /v1/models/NAME:explain with {"instances": ["a prompt"]}',
        )
    _check_tensors(predictor, tensors)
    names = list(tensors)
    inputs = {name: torch.from_numpy(np.ascontiguousarray(array)) for name, array in tensors.items()}
    with torch.no_grad():
        outputs = model(*inputs.values()).float().numpy()
    targets = _targets(predictor, outputs, target)
    target_tensor = torch.tensor(targets)
    if kind.attributed_through == "embedding":
        values, delta, baseline = _token_attributions(predictor, kind, inputs, names, method, target_tensor)
    else:
        values, delta, baseline = _dense_attributions(
            predictor, kind, inputs[names[0]], method, target_tensor
        )
    probabilities = predictor.task.probabilities(outputs.astype(np.float64))
    explanations = []
    for row, index in enumerate(targets):
        explanations.append(
            Explanation(
                ref=predictor.bundle.ref,
                kind=kind.name,
                method=method,
                baseline=baseline,
                target=predictor.encoder.classes_[index] if predictor.encoder.classes_ else None,
                target_index=index,
                prediction=predictor.task.explained_prediction(outputs[row], predictor.encoder.coding),
                probability=float(probabilities[row, index]) if probabilities is not None else None,
                attributions=kind.attribution_shape(predictor.preprocessor, tensors, row, values[row]),
                convergence_delta=None if delta is None else float(delta[row]),
            )
        )
    return explanations


def _check_tensors(predictor: Predictor, tensors: Tensors) -> None:
    """Names and shapes as the bundle's schema says (-1: any size), before any model code sees them."""
    specs = {spec.name: spec for spec in predictor.bundle.manifest.inputs.tensors}
    if list(tensors) != list(specs):
        raise RequestError(
            f"inputs: the model takes {', '.join(specs)}; got {', '.join(tensors) or 'nothing'}"
        )
    for name, array in tensors.items():
        wanted = specs[name].shape
        if len(array.shape) != len(wanted) or any(
            w not in (-1, g) for w, g in zip(wanted, array.shape, strict=True)
        ):
            raise RequestError(f"inputs[{name}]: shape {list(array.shape)} does not fit the model's {wanted}")


def _targets(predictor: Predictor, outputs: np.ndarray, target: str | None) -> list[int]:
    classes = predictor.encoder.classes_
    if not classes:
        if target is not None:
            raise RequestError(f"target: {predictor.bundle.ref} predicts values; a class cannot be chosen")
        return [0] * len(outputs)
    if target is None:
        return outputs.argmax(axis=1).tolist()
    if str(target) not in classes:
        raise RequestError(
            f"target: '{target}' is not a class of {predictor.bundle.ref}",
            hint=f"classes: {', '.join(classes[:20])}",
        )
    return [classes.index(str(target))] * len(outputs)


def _dense_attributions(
    predictor: Predictor, kind: InputKind, inputs: torch.Tensor, method: str, target: torch.Tensor
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Tabular rows or images: the method straight on the float input tensor."""
    import captum.attr as attr  # heavy: only when something is explained

    model = predictor.model
    inputs = inputs.float().requires_grad_()
    baseline = torch.zeros_like(inputs)
    mask = _feature_mask(predictor, kind, inputs)
    delta = None
    if method == "ig":
        values, delta = attr.IntegratedGradients(model).attribute(
            inputs, baselines=baseline, target=target, n_steps=IG_STEPS, return_convergence_delta=True
        )
    elif method == "saliency":
        values = attr.Saliency(model).attribute(inputs, target=target)  # |∂ output / ∂ input|
    elif method == "gradshap":
        values = attr.GradientShap(model).attribute(
            inputs,
            baselines=torch.cat([baseline[:1], baseline[:1] + 0.1]),
            target=target,
            n_samples=GRADSHAP_SAMPLES,
        )
    elif method == "occlusion":
        values = attr.FeatureAblation(model).attribute(
            inputs,
            baselines=baseline,
            target=target,
            feature_mask=mask,
            perturbations_per_eval=PERTURBATIONS_PER_EVAL,
        )
    else:
        values = _row_by_row(
            _surrogate(model, method),
            inputs,
            baseline,
            target,
            mask,
            n_samples=SURROGATE_SAMPLES,
            perturbations_per_eval=PERTURBATIONS_PER_EVAL,
        )
    if method in GROUP_METHODS:
        values = _spread(values, mask)
    described = "training mean (zero after standardisation)"
    return values.detach().numpy(), None if delta is None else delta.detach().numpy(), described


def _spread(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Captum gives each of a group's columns the whole group's value; shared evenly instead, a one-hot
    feature's columns summed back give its value once (a categorical of k values counted k times before)
    and a patch's pixels add up to the patch's value."""
    sizes = torch.bincount(mask[0].flatten())  # the groups are the same in every row
    return values / sizes[mask].to(values.dtype)


def _feature_mask(predictor: Predictor, kind: InputKind, inputs: torch.Tensor) -> torch.Tensor:
    """Which inputs are switched together by occlusion, KernelSHAP and LIME (as the input kind groups them: a
    feature's one-hot columns, an image's square patches, each token), the same for every row."""
    groups = kind.feature_groups(predictor.preprocessor, tuple(inputs.shape[1:]))
    return torch.from_numpy(np.ascontiguousarray(groups)).expand_as(inputs).contiguous()


def _token_attributions(
    predictor: Predictor,
    kind: InputKind,
    inputs: dict[str, torch.Tensor],
    names: list[str],
    method: str,
    target: torch.Tensor,
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Token ids: gradient methods on the embedding layer's output (summed over its width); occlusion,
    KernelSHAP and LIME replace tokens by the padding token."""
    import captum.attr as attr

    encoder = predictor.preprocessor
    assert isinstance(encoder, TextEncoder)
    model, ids = predictor.model, inputs[names[0]]
    extra = tuple(inputs[name] for name in names[1:])
    pad = torch.full_like(ids, encoder.pad_id())
    layer = _embedding_layer(model)
    delta = None
    if method == "ig":
        values, delta = attr.LayerIntegratedGradients(model, layer).attribute(
            ids,
            baselines=pad,
            target=target,
            additional_forward_args=extra,
            n_steps=IG_STEPS,
            internal_batch_size=IG_STEPS,
            return_convergence_delta=True,
        )
    elif method == "saliency":
        values = attr.LayerGradientXActivation(model, layer).attribute(
            ids, target=target, additional_forward_args=extra
        )
    elif method == "gradshap":  # in embedding space: token ids cannot be sampled between
        with torch.no_grad():
            embedded, baseline = layer(ids), layer(pad[:1])
        values = attr.GradientShap(_from_embeddings(model, layer)).attribute(
            embedded,
            baselines=torch.cat([baseline, (baseline + embedded[:1]) / 2]),
            target=target,
            additional_forward_args=extra,
            n_samples=GRADSHAP_SAMPLES,
        )
    else:
        explainer = attr.FeatureAblation(model) if method == "occlusion" else _surrogate(model, method)
        options: dict[str, Any] = {"perturbations_per_eval": PERTURBATIONS_PER_EVAL}
        if method != "occlusion":
            options["n_samples"] = SURROGATE_SAMPLES
        mask = _feature_mask(predictor, kind, ids)
        values = _row_by_row(explainer, ids, pad, target, mask, extra, **options).float()
    per_token = values.detach().float()
    if per_token.ndim == 3:
        per_token = per_token.sum(dim=-1)
    return per_token.numpy(), None if delta is None else delta.detach().numpy(), "padding token"


def _surrogate(model: nn.Module, method: str) -> Any:
    """KernelSHAP or LIME (Captum's): a linear model of the output on which feature groups are kept (the rest
    at the baseline), fitted to random coalitions. KernelSHAP weighs them by the Shapley kernel, so the
    values about add up to the output's change; LIME (Captum's defaults) keeps each group with probability
    ½, weighs a coalition by its closeness to the input (exponential kernel on cosine distance) and fits a
    Lasso (alpha 0.01), so groups that barely matter get exactly zero."""
    import captum.attr as attr

    return attr.KernelShap(model) if method == "kernelshap" else attr.Lime(model)


def _row_by_row(
    explainer: Any,
    inputs: torch.Tensor,
    baselines: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    extra: tuple[torch.Tensor, ...] = (),
    **options: Any,
) -> torch.Tensor:
    """``explainer`` on each row alone (KernelSHAP and LIME fit one model per input), its sampling seeded per
    row — the same input gets the same attributions whatever else the request holds — on a forked random
    state, so the caller's is left as it was."""
    values = []
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):  # CUDA generators too
        for row in range(len(inputs)):
            torch.manual_seed(SURROGATE_SEED)
            values.append(
                explainer.attribute(
                    inputs[row : row + 1],
                    baselines=baselines[row : row + 1],
                    target=target[row : row + 1],
                    additional_forward_args=tuple(tensor[row : row + 1] for tensor in extra),
                    feature_mask=mask[row : row + 1],
                    **options,
                )
            )
    return torch.cat(values)


def _from_embeddings(model: nn.Module, layer: nn.Embedding) -> Callable[..., torch.Tensor]:
    """The model as a function of its token embeddings (the embedding layer's output is replaced)."""

    def forward(embeddings: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        handle = layer.register_forward_hook(lambda _module, _inputs, _output: embeddings)
        try:
            return model(torch.zeros(embeddings.shape[:2], dtype=torch.long), *extra)
        finally:
            handle.remove()

    return forward


def _embedding_layer(model: nn.Module) -> nn.Embedding:
    """The token embedding: the first Embedding a model registers (ours and Hugging Face models alike)."""
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            return module
    raise ConfigError("this model has no embedding layer to attribute tokens through")


def _prompts(instances: Sequence[Any]) -> list[str]:
    prompts = []
    for index, instance in enumerate(instances):
        text = instance.get("prompt") if isinstance(instance, dict) else instance
        if not isinstance(text, str) or not text:
            raise RequestError(f"instances[{index}]: a prompt (a non-empty string) is required")
        prompts.append(text)
    return prompts


def _explain_prompt(predictor: Predictor, prompt: str, method: str, target: str | None) -> Explanation:
    """Attribution of the next token (the most likely one, or ``target``) to each prompt token."""
    import captum.attr as attr

    if method != "ig":
        raise ConfigError(
            f"a language model is explained with ig, not {method}",
            hint="set method to ig",
            parameter="method",
        )
    corpus = predictor.preprocessor
    assert isinstance(corpus, CorpusBlocks)
    ids = torch.from_numpy(np.asarray(corpus.stream(prompt), dtype=np.int64))[None]
    if ids.shape[1] == 0:
        raise RequestError(f"prompt: {prompt!r} holds no token {predictor.bundle.ref} knows")
    model = predictor.model

    def next_token_logits(tokens: torch.Tensor) -> torch.Tensor:
        return model(tokens)[:, -1, :]

    with torch.no_grad():
        logits = next_token_logits(ids)[0].float()
    chosen = _next_token(corpus, logits, target)
    values, delta = attr.LayerIntegratedGradients(next_token_logits, _embedding_layer(model)).attribute(
        ids,
        baselines=torch.zeros_like(ids),
        target=chosen,
        n_steps=IG_STEPS,
        internal_batch_size=IG_STEPS,
        return_convergence_delta=True,
    )
    per_token = values.detach().float().sum(dim=-1)[0].tolist()
    tokens = [corpus.decode([int(index)]) for index in ids[0]]
    probability = float(torch.softmax(logits, dim=0)[chosen])
    return Explanation(
        ref=predictor.bundle.ref,
        kind=predictor.bundle.manifest.inputs.kind,
        method=method,
        baseline="token id 0",
        target=corpus.decode([chosen]),
        target_index=chosen,
        prediction=corpus.decode([int(logits.argmax())]),
        probability=probability,
        attributions=[[token, value] for token, value in zip(tokens, per_token, strict=True)],
        convergence_delta=float(delta[0]),
    )


def _next_token(corpus: CorpusBlocks, logits: torch.Tensor, target: str | None) -> int:
    if target is None:
        return int(logits.argmax())
    ids = corpus.stream(target)
    if len(ids) != 1:
        raise RequestError(f"target: '{target}' is {len(ids)} tokens for this model; give one token")
    return int(ids[0])
