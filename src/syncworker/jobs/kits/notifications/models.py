"""The notification job's payload: the seed's ``NotificationJob``, field names as its
producers send them, plus ``fcmTokens`` for a multicast push."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, Field


class NotificationJob(BaseModel):
    type: Literal["push", "email", "sms"] = Field(description="the channel")
    userId: str = Field(min_length=1, description="the recipient user (notifications.user_id)")
    title: str = Field(description="push title, e-mail subject; not sent in an SMS")
    body: str = Field(description="the text")
    fcmToken: str | None = Field(None, description="one device's FCM token (blank: none)")
    fcmTokens: list[str] = Field(
        default_factory=list, description="more device tokens: one FCM request per token"
    )
    email: str | None = Field(None, description="the recipient address")
    phoneNumber: str | None = Field(None, description="the recipient number (E.164)")
    data: dict[str, str] = Field(
        default_factory=dict, description="FCM data payload / template variables"
    )

    def tokens(self) -> list[str]:
        """``fcmToken`` then ``fcmTokens``, each once, in order."""
        given = ([self.fcmToken] if self.fcmToken else []) + self.fcmTokens
        return list(dict.fromkeys(token for token in given if token))

    def user_uuid(self) -> uuid.UUID | None:
        try:
            return uuid.UUID(self.userId)
        except ValueError:
            return None
