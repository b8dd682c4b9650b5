"""The settings of ``jobs.kits.media`` (pydantic only: importing this loads no driver)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from syncworker.core.fields import StrictModel

if TYPE_CHECKING:
    from syncworker.jobs.kits.base import Kit


class MediaKitConfig(StrictModel):
    def build(self) -> Kit:
        from syncworker.jobs.kits.media.kit import MediaKit

        return MediaKit(self)
