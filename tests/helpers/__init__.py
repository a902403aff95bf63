"""Helpers shared by the test wings: tiny random networks, the in-process `glide` runner,
the independent reference oracles, and where the repository and ../shared are."""
