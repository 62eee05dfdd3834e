"""`python -m assistant.cli` (as `accelerate launch -m assistant.cli train plugin …` runs it)."""

from assistant.cli import run

run()
