"""The typer CLI, one sub-app per area. Heavy imports stay inside command bodies so that
``python main.py --help`` works on a device without torch."""
