"""The pipeline config: pydantic models for the YAML file, dotted ``--set`` overrides, and loading.

Every section refuses unknown keys (with the dotted path and a did-you-mean), and every problem in a file is
reported at once, before any work starts.
"""

from __future__ import annotations

import hashlib
import json
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    model_validator,
)

from modelcycle.errors import ConfigError
from modelcycle.plugins import did_you_mean

# A task's name as ``modelcycle.tasks.TASKS`` registers it (classification, regression,
# multi_label_classification, language_modeling, embedding, or a plugin's): the registry, one floor up, is
# the one list, and ``pipeline.resolve.validate`` checks the name against it before any work starts.
TaskName = str
ColumnType = Literal["numeric", "categorical", "text"]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SplitConfig(Section):
    """Fractions of the rows held out for validation and test; the rest trains."""

    valid: float = Field(0.15, ge=0.0, lt=1.0)
    test: float = Field(0.15, ge=0.0, lt=1.0)
    stratify: bool = True

    @model_validator(mode="after")
    def _leave_rows_to_train(self) -> SplitConfig:
        if self.valid + self.test > 0.9:
            raise ValueError(
                f"valid + test = {self.valid + self.test:g} must leave at least 10% of the rows to train on"
            )
        return self


class TextConfig(Section):
    """How raw text becomes token ids: a word vocabulary fitted on the training split, characters, or the
    tokenizer of a pretrained model (a local directory, or ``builtin:minilm``)."""

    tokenizer: str = "word"
    max_length: PositiveInt = 128
    vocab_size: PositiveInt = 20_000
    min_frequency: PositiveInt = 1
    lowercase: bool = True


class ImageConfig(Section):
    """Image loading: every image is resized to ``size`` (height, width); ``grayscale`` keeps one channel."""

    size: tuple[PositiveInt, PositiveInt] | None = None
    grayscale: bool = False


class PreprocessConfig(Section):
    """Preprocessing fitted on the training split only; its state is saved in the bundle."""

    impute_numeric: Literal["median", "mean"] = "median"
    standardize: bool = True
    categorical: Literal["onehot", "ordinal"] = "onehot"
    max_categories: PositiveInt = 50
    text: TextConfig = Field(default_factory=TextConfig)
    image: ImageConfig = Field(default_factory=ImageConfig)


class DataConfig(Section):
    """Where the data comes from and how it is split, typed and preprocessed."""

    source: str
    target: str | None = None
    task: TaskName | None = None
    features: list[str] | None = None
    column_types: dict[str, ColumnType] = Field(default_factory=dict)
    split: SplitConfig = Field(default_factory=SplitConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    imbalance: Literal["none", "class_weights", "oversample"] = "none"
    max_rows: PositiveInt | None = None


class ModelConfig(Section):
    """An architecture by registered name, with its hyper-parameters (checked by the architecture)."""

    arch: str
    params: dict[str, Any] = Field(default_factory=dict)


class OptimizerConfig(Section):
    """``name``: sgd, adam or adamw. ``momentum`` and ``nesterov`` apply to sgd."""

    name: str = "adamw"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    nesterov: bool = False

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> OptimizerConfig:
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        return self


class ScheduleConfig(Section):
    """The learning rate over the optimizer steps: ``constant``, ``step`` (times ``gamma`` every
    ``step_epochs``), ``cosine`` (down to ``min_lr``) or ``one_cycle`` (up to ``optimizer.lr`` and down),
    after an optional linear warm-up of ``warmup_steps``."""

    name: Literal["constant", "step", "cosine", "one_cycle"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    step_epochs: PositiveInt = 1
    gamma: float = Field(0.1, gt=0.0, le=1.0)
    min_lr: float = Field(0.0, ge=0.0)


class EarlyStoppingConfig(Section):
    """Stop when ``metric`` (a key of the epoch record, e.g. valid_accuracy, valid_log_loss, train_loss) has
    not improved by ``min_delta`` for ``patience`` epochs; ``mode`` auto means min for losses and errors."""

    metric: str
    patience: PositiveInt = 5
    mode: Literal["auto", "min", "max"] = "auto"
    min_delta: float = Field(0.0, ge=0.0)


class TrainConfig(Section):
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 32
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    grad_clip_norm: float | None = Field(None, gt=0.0)
    accumulate_steps: PositiveInt = 1
    # fp32 by default: on AVX2 CPUs without AMX a bf16 matmul measured ~50x slower than fp32
    # (docs/architecture.md §7)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    # How ranks share the model: ``ddp`` keeps it whole on every rank; ``fsdp`` shards parameters,
    # gradients and optimizer state across the ranks (FSDP2, one unit per transformer block), for models
    # that do not fit one rank. A single process trains the whole model either way.
    strategy: Literal["ddp", "fsdp"] = "ddp"
    # Recompute each transformer block's activations in the backward pass instead of keeping them: memory
    # for sequence length, paid in compute (architectures with transformer blocks: gpt, hf, hf_causal_lm).
    activation_checkpointing: bool = False
    early_stopping: EarlyStoppingConfig | None = None
    checkpoint_every_steps: PositiveInt | None = None
    log_every_steps: PositiveInt = 10
    device: str = "auto"

    @model_validator(mode="after")
    def _sharding_has_no_loss_scaling(self) -> TrainConfig:
        if self.strategy == "fsdp" and self.precision == "fp16":
            raise ValueError("strategy fsdp offers no loss scaling for fp16: use precision bf16")
        return self


class SearchDimension(Section):
    """One hyper-parameter to search: a float or int range (``log`` for scales like learning rates, ``step``
    for grids), or a list of ``choices`` (any YAML values, e.g. layer sizes)."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(None, gt=0)
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _complete(self) -> SearchDimension:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical dimension needs a non-empty choices list")
        elif self.low is None or self.high is None or self.low >= self.high:
            raise ValueError(f"a {self.type} dimension needs low < high")
        elif self.log and self.low <= 0:
            raise ValueError("a log-scaled dimension needs low > 0")
        elif self.log and self.step is not None:
            raise ValueError("a dimension is either log-scaled or stepped, not both")
        elif self.type == "int" and self.step is not None and (self.step < 1 or self.step != int(self.step)):
            raise ValueError("an int dimension's step is a whole number of at least 1")
        return self


class TuneConfig(Section):
    """Hyper-parameter search with Optuna (TPE sampler, median pruner on the per-epoch validation metric).
    ``space`` maps dotted config keys (as for --set) to dimensions; ``metric`` defaults to the task's own
    (valid_accuracy, valid_rmse, valid_perplexity)."""

    trials: PositiveInt = 20
    space: dict[str, SearchDimension]
    metric: str | None = None
    direction: Literal["auto", "minimize", "maximize"] = "auto"
    pruner: Literal["median", "none"] = "median"
    startup_trials: int = Field(5, ge=0)
    warmup_epochs: int = Field(1, ge=0)
    timeout_seconds: PositiveInt | None = None


class LlmConfig(Section):
    """The language-model engine (modelcycle.engine): continuous batching of every generation a version
    serves, within a budget of cached tokens. ``engine: false`` keeps round one's path, one generation at a
    time per version (the baseline the engine is measured against)."""

    engine: bool = True
    max_running: PositiveInt = 16  # sequences decoded together (each choice of ``n`` is one)
    max_batch_tokens: PositiveInt = 32_768  # prompt + max_tokens of every admitted sequence, together
    max_waiting: PositiveInt = 256  # requests waiting for room; more get 503 with Retry-After
    prefill_chunk: PositiveInt = (
        256  # prompt tokens per step: longer ones stall the decoding sequences longer
    )


class ServeConfig(Section):
    """``modelcycle serve``'s knobs (the command's options override them): the variant to run, the adaptive
    batcher (rows per batch, the longest wait for a batch to fill under load, the queue bound beyond which
    requests get 503), and the limits every request is checked against."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    variant: str = "auto"  # auto: the fastest measured variant whose gate passed; base; or a variant's name
    force_variant: bool = False  # serve a named variant even though its gate rejected it
    max_batch_size: PositiveInt = 32
    max_queue_delay_ms: float = Field(2.0, ge=0)
    max_queue: PositiveInt = 256
    request_timeout_s: float = Field(10.0, gt=0)
    max_body_bytes: PositiveInt = 4 * 1024 * 1024
    max_rows_per_request: PositiveInt = 1024
    max_text_chars: PositiveInt = 20_000
    shadow_timeout_s: float = Field(10.0, gt=0)
    max_concurrent_explanations: PositiveInt = (
        1  # more get 503 at once: explanations must not starve predictions
    )
    llm: LlmConfig = Field(default_factory=LlmConfig)
    ssl_certfile: Path | None = None  # TLS: a PEM certificate (chain) and its key; both or neither
    ssl_keyfile: Path | None = None
    allow_plain_http: bool = False  # beyond this machine without TLS: only behind a proxy that has it


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def duration_seconds(text: str) -> float:
    """Seconds in ``30s``, ``15m``, ``1h`` or ``7d`` (ValueError otherwise)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if match is None:
        raise ValueError(f"'{text}' is not a duration (e.g. 30s, 15m, 1h, 7d)")
    return float(match[1]) * DURATION_UNITS[match[2]]


Duration = Annotated[str, AfterValidator(lambda text: duration_seconds(text) and text)]


class PiiConfig(Section):
    """What counts as personal data in stored inputs (see modelcycle.monitor.pii)."""

    enabled: bool = True
    # every rule of modelcycle.monitor.pii (tests/test_pii.py keeps the two lists equal)
    rules: list[str] = Field(default_factory=lambda: ["email", "cn_id", "card", "iban", "ssn", "ip", "phone"])
    fields: list[str] | None = None  # only these keys of JSON inputs (default: every string)
    patterns: dict[str, str] = Field(default_factory=dict)  # name → regular expression of the user's own
    phone_region: str = "US"  # whose national phone formats count first
    phone_regions: list[str] = Field(  # the other countries whose national formats count too
        default_factory=lambda: ["US", "GB", "DE", "FR", "ES", "IN", "CN", "JP", "BR"]
    )


class AlertRule(Section):
    """An alert: ``metric`` is ``drift`` (the dataset drifted) or a live quality metric of ``window``
    (accuracy, precision_macro, recall_macro, f1_macro, roc_auc, mae, rmse) that must not go ``below`` or
    ``above`` a threshold once ``min_samples`` labelled predictions are in the window."""

    metric: str
    window: Duration = "1h"
    below: float | None = None
    above: float | None = None
    min_samples: PositiveInt = 30

    @model_validator(mode="after")
    def _one_threshold(self) -> AlertRule:
        if self.metric != "drift" and (self.below is None) == (self.above is None):
            raise ValueError(f"alert on {self.metric}: give exactly one of below / above")
        return self


class WebhookConfig(Section):
    url: str
    timeout_s: float = Field(5.0, gt=0)
    retries: int = Field(3, ge=0)


class EncryptionConfig(Section):
    """Encryption at rest of what the prediction store holds about people (see modelcycle.monitor.encryption).
    When on, the keys come from ``key_file``, else from the MODELCYCLE_STORE_KEYS variable; readers of the
    store (the server, ``update``, ``monitor report``) need the same section to read it."""

    enabled: bool = False
    key_file: str | None = None  # one ``id:base64-key`` a line, the current key first


class MonitorConfig(Section):
    """Monitoring in the server (on by default): the prediction store, PII masking, live quality windows,
    scheduled drift checks and alerts."""

    enabled: bool = True
    sample_rate: float = Field(1.0, ge=0, le=1)  # the share of requests stored
    # beyond this many stored requests a second, the rest are sampled out (counted). Storing costs ~10 µs of
    # CPU a record on a fast core (SQLite's insert most of it, in the writer process) and 25-30 µs on a
    # slow shared one, where 1,000 a second cost an HTTP-bound model 5 % of its throughput on 2 cores.
    # 500 a second still fills the drift window (2,000 rows) in 4 s and labels a live-quality window
    # with thousands of samples an hour. None: store all.
    max_records_per_s: PositiveInt | None = 500
    # a SQLite file, or a PostgreSQL URL (postgresql:// or postgresql+psycopg://) for a store that servers on
    # several machines share; default: monitor.db under MODELCYCLE_HOME
    store: str | None = None
    buffer_size: PositiveInt = 10_000
    retention_days: float = Field(30.0, gt=0)
    max_rows: PositiveInt = 1_000_000
    interval_s: float = Field(30.0, gt=0)  # how often quality, drift and alerts are computed
    windows: list[Duration] = Field(default_factory=lambda: ["1h", "24h"])
    drift_window: Duration = "1h"
    drift_min_rows: PositiveInt = 100
    drift_alpha: float = Field(0.05, gt=0, lt=1)
    drift_share: float = Field(0.5, gt=0, le=1)
    pii: PiiConfig = Field(default_factory=PiiConfig)
    encryption: EncryptionConfig = Field(default_factory=EncryptionConfig)
    alerts: list[AlertRule] = Field(default_factory=lambda: [AlertRule(metric="drift")])
    webhook: WebhookConfig | None = None


class UpdateConfig(Section):
    """``modelcycle update``: when a candidate is made from feedback, how it is judged, and how it goes live.

    The candidate must not be worse than production by more than ``tolerance`` on either the original
    holdout or recent labelled traffic, and must beat production on recent traffic by more than ``margin``.
    Then it takes ``canary_percent`` of live traffic; once ``canary_min_samples`` of its answers are
    labelled, it is promoted, unless its live primary metric trails production's by more than
    ``rollback_drop`` (rolled back) — or ``canary_timeout_s`` passes without enough labels (rolled back)."""

    window: Duration = "7d"  # feedback this recent is used
    min_feedback: PositiveInt = 50
    holdout_fraction: float = Field(0.3, gt=0, lt=1)  # of the labelled feedback, kept for judging
    replay_ratio: float = Field(1.0, ge=0)  # training rows replayed per feedback row (against forgetting)
    epochs: PositiveInt = 5
    tolerance: float = Field(0.01, ge=0)
    margin: float = Field(0.0, ge=0)
    canary_percent: float = Field(20.0, gt=0, le=100)
    canary_min_samples: PositiveInt = 30
    canary_timeout_s: float = Field(600.0, gt=0)
    rollback_drop: float = Field(0.05, ge=0)
    poll_s: float = Field(5.0, gt=0)  # how often a canary's live quality is read
    server: str | None = None  # the running server's base URL (for canary and promotion)
    watch_every: Duration = "1h"  # --watch: also run on this schedule, not only on alerts


class PipelineConfig(Section):
    """The whole pipeline YAML."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    seed: int = Field(0, ge=0, lt=2**32)
    data: DataConfig
    model: ModelConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    tune: TuneConfig | None = None
    serve: ServeConfig = Field(default_factory=ServeConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    update: UpdateConfig = Field(default_factory=UpdateConfig)

    def config_hash(self) -> str:
        """sha256 of the canonical JSON of the resolved config (for lineage and resume checks); how a model
        is served and watched is not part of what it is."""
        canonical = json.dumps(
            self.model_dump(mode="json", exclude={"serve", "monitor", "update"}),
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """Read a pipeline YAML, apply ``a.b.c=value`` overrides, validate; report every error at once."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {error.start} is {error.object[error.start]:#04x})"
        ) from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config ({error.strerror})") from None
    raw = parse_yaml(text, str(path))
    for override in overrides:
        apply_override(raw, override)
    return validate_config(raw, str(path))


def parse_yaml(text: str, origin: str) -> dict[str, Any]:
    """Parse YAML text whose top level must be a mapping; syntax errors name the line and column."""
    try:
        raw = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{origin}:{mark.line + 1}:{mark.column + 1}" if mark else origin
        raise ConfigError(f"{where}: YAML syntax error: {error.problem or error.context}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{origin}: YAML error: {error}") from None
    if raw is None:
        raise ConfigError(f"{origin}: the config is empty", hint="see examples/digits-cnn.yaml")
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping, got {type(raw).__name__}")
    return raw


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Set ``dotted.key=value`` in ``raw`` in place; the value is parsed as YAML (numbers, lists, bools)."""
    key, sep, value_text = override.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(
            f"'{override}': expected KEY=VALUE, e.g. train.optimizer.lr=1e-3", parameter="overrides"
        )
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(
                f"'{override}': '{'.'.join(parts[: depth + 1])}' is not a section", parameter="overrides"
            )
        node = child
    node[parts[-1]] = _override_value(value_text)


def _override_value(text: str) -> Any:
    """A command-line value read as YAML (numbers, lists, true / false), except that YAML 1.1's other
    booleans (yes, no, on, off) stay strings: ``--set data.target=yes`` means the column called yes."""
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text
    if isinstance(value, bool) and text.strip().lower() not in ("true", "false"):
        return text
    return value


def validate_config(raw: dict[str, Any], origin: str = "<config>") -> PipelineConfig:
    """Validate a parsed config; all problems go into one ConfigError, each with its dotted path."""
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as error:
        problems = [_describe(item) for item in error.errors()]
        count = f"{len(problems)} error{'s' if len(problems) > 1 else ''}"
        raise ConfigError(f"{origin}: {count}: " + "; ".join(problems)) from None


def _describe(item: Any) -> str:
    location = tuple(part for part in item["loc"] if isinstance(part, (str, int)))
    dotted = ".".join(str(part) for part in location) or "<root>"
    if item["type"] == "extra_forbidden":
        known = _field_names_at(location[:-1])
        return f"{dotted}: unknown key{did_you_mean(str(location[-1]), known)}"
    if item["type"] == "missing":
        return f"{dotted}: required key is missing"
    return f"{dotted}: {item['msg'].removeprefix('Value error, ')} (got {item.get('input')!r})"


def _field_names_at(location: tuple[str | int, ...]) -> list[str]:
    """The keys the section at ``location`` accepts (for did-you-mean on unknown keys)."""
    model: type[BaseModel] | None = PipelineConfig
    for part in location:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return []
        model = _section_type(model.model_fields[part].annotation)
    return list(model.model_fields) if model else []


def _section_type(annotation: Any) -> type[BaseModel] | None:
    candidates = (
        typing.get_args(annotation) if typing.get_origin(annotation) in (Union, types.UnionType) else ()
    )
    for candidate in (annotation, *candidates):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None
