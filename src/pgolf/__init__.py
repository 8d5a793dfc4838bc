"""pgolf: a cached, reproducible submission pipeline for OpenAI's Parameter Golf challenge."""

__version__ = "0.1.0"

# The challenge's limits (see README / docs): decimal bytes, seconds on 8xH100.
ARTIFACT_CAP_BYTES = 16_000_000
TRAIN_BUDGET_S = 600.0
EVAL_BUDGET_S = 600.0
