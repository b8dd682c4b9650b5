"""``jobs.kits``: which kits this process turns on, each with its own settings."""

from __future__ import annotations

from pydantic import Field

from syncworker.core.fields import StrictModel
from syncworker.jobs.kits.base import Kit
from syncworker.jobs.kits.cleanup.config import CleanupKitConfig
from syncworker.jobs.kits.media.config import MediaKitConfig
from syncworker.jobs.kits.notifications.config import NotificationsKitConfig


class KitsConfig(StrictModel):
    media: MediaKitConfig | None = Field(
        None, description="images, video and audio to storage, results on the messages row"
    )
    notifications: NotificationsKitConfig | None = Field(
        None,
        description="push (FCM HTTP v1), e-mail (SMTP) and SMS, every attempt in notifications",
    )
    cleanup: CleanupKitConfig | None = Field(
        None, description="expired stories, old sessions and messages, prekeys, orphaned media"
    )

    def build(self) -> dict[str, Kit]:
        """The configured kits by family name; nothing is opened."""
        kits: dict[str, Kit] = {}
        for family in type(self).model_fields:
            settings = getattr(self, family)
            if settings is not None:
                kits[family] = settings.build()
        return kits
