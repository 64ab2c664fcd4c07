"""The web console: static pages served by `beamport serve` at `/`, driving the same API as any client.

No build step: plain HTML, CSS and JavaScript (ES modules) in static/, so nothing but Beamport is needed to
run or change it.
"""

from pathlib import Path

STATIC = Path(__file__).parent / "static"
