"""The dashboard (Textual) and the command line.

Textual draws at most ``TEXTUAL_FPS`` frames a second (60 by default): a key pressed just after
a frame waits for the next one. At 120 the dashboard's key-to-screen p99 at 1,000 agents and 100
events/s halves (``bench/bench_dashboard.py``); frames are still drawn only when something changed.
Set before Textual is imported; an operator's own ``TEXTUAL_FPS`` wins.
"""

import os

os.environ.setdefault("TEXTUAL_FPS", "120")
