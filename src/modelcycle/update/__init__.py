"""The closed loop: feedback → fine-tune → gate → canary → promote, or roll back."""

from modelcycle.update.loop import AdminClient, UpdateResult, update

__all__ = ["AdminClient", "UpdateResult", "update"]
