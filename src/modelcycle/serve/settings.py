"""The server's knobs: the ``serve:`` section of a config and the ``modelcycle serve`` options."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, PositiveInt


class ServeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    variant: str = "auto"  # auto: the fastest measured variant whose gate passed; or a variant name / base
    max_batch_size: PositiveInt = 32
    max_queue_delay_ms: float = Field(2.0, ge=0)
    max_queue: PositiveInt = 256
    request_timeout_s: float = Field(10.0, gt=0)
    max_body_bytes: PositiveInt = 4 * 1024 * 1024
    max_rows_per_request: PositiveInt = 1024
    max_text_chars: PositiveInt = 20_000
    shadow_timeout_s: float = Field(10.0, gt=0)
