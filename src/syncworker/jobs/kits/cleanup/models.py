"""The clean-up kit's payloads: the seed's cleanup job ``{type, data?}`` plus ``dry_run``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

CleanupType = Literal[
    "stories",
    "sessions",
    "messages",
    "temp_files",
    "prekeys",
    "orphaned_media",
    "maintenance",
    "websockets",
    "user_stats",
    "health",
]


class CleanupOptions(BaseModel):
    """The payload of a handler named after its job (``kit:cleanup.stories``): every field is
    optional, so a cron entry may send ``{}``."""

    model_config = ConfigDict(extra="forbid")

    type: CleanupType | None = Field(
        None, description="when given, must name the handler's own job type"
    )
    data: dict[str, Any] | None = Field(
        None, description="the seed's free-form data; only data.dry_run is read"
    )
    dry_run: bool = Field(False, description="count what would be done and change nothing")

    @model_validator(mode="after")
    def _dry_run_in_data(self) -> CleanupOptions:
        # The seed's producers can only set data: {dry_run: true} there means the same.
        flag = (self.data or {}).get("dry_run")
        if flag is not None and not isinstance(flag, bool):
            raise ValueError("data.dry_run: expected true or false")
        if flag:
            self.dry_run = True
        return self


class CleanupJob(CleanupOptions):
    """The seed's cleanup job, for ``kit:cleanup.run``: the type picks the job."""

    type: CleanupType = Field(description="which clean-up to run")
