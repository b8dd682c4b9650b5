"""The HTTP control API and the dashboard (extra: syncworker[api])."""
