"""Where the kits keep media: S3 (or an S3-compatible store) or a local directory."""
