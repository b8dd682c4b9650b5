"""Ready-made job families a team turns on in config: media, notifications and clean-up.

    jobs:
      kits:
        media: {database: "${DATABASE_URL}", storage: {type: s3, bucket: "${AWS_S3_BUCKET}"}}
      tasks:
        process_image: {handler: "kit:media.image", queue: media, priority: 2}

A ``kit:FAMILY.NAME`` handler is one of the family's handlers, bound to the kit's settings
and its shared clients (database pool, storage, HTTP); the worker opens each configured kit
before it runs a job and closes it after the last one. Each kit also works alone from
Python: ``async with MediaKit(MediaKitConfig(...)) as kit: await kit.image(job)``.
"""

from syncworker.jobs.kits.base import Kit, resolve_kit_handler

__all__ = ["Kit", "resolve_kit_handler"]
