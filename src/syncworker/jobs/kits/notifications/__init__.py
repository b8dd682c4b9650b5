"""The notifications kit (issue 13): see config.py for its settings and kit.py for its handlers."""
