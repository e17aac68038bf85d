"""Where artifacts run: runners that share one protocol (see runner_script.py)."""
