"""The settings of ``jobs.kits.cleanup`` (pydantic only: importing this loads no driver)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from syncworker.core.fields import StrictModel

if TYPE_CHECKING:
    from syncworker.jobs.kits.base import Kit


class CleanupKitConfig(StrictModel):
    def build(self) -> Kit:
        from syncworker.jobs.kits.cleanup.kit import CleanupKit

        return CleanupKit(self)
