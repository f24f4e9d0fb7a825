"""Stage 7, apps: end-to-end uses of the lower stages (the demo, and the applications)."""
