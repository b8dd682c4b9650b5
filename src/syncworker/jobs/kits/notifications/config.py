"""The settings of ``jobs.kits.notifications`` (pydantic only: importing this loads no driver)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from syncworker.core.fields import StrictModel

if TYPE_CHECKING:
    from syncworker.jobs.kits.base import Kit


class NotificationsKitConfig(StrictModel):
    def build(self) -> Kit:
        from syncworker.jobs.kits.notifications.kit import NotificationsKit

        return NotificationsKit(self)
