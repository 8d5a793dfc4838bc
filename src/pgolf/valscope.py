"""What a score was computed on: the training script's ``val_scope`` line, printed once per scoring run right after
it loads the validation split::

    val_scope: scored_tokens:<N> scored_bytes:<M> split_tokens:<T> split_bytes:<B>

N is the number of validation tokens the run reads and scores (a prefix of the split; every token but the first is a
scored target, the first is context only) and M the bytes of those targets; T and B are the same for the whole split
(T is the data manifest's ``val_tokens``). ``VAL_TOKENS_LIMIT`` (config ``eval.val_tokens_limit``) scores a prefix
only: such a score is an experiment's, never a record's (``pgolf record`` refuses it on both tracks)."""

from __future__ import annotations

import re

VAL_SCOPE = re.compile(
    r"val_scope: scored_tokens:(?P<scored_tokens>\d+) scored_bytes:(?P<scored_bytes>\d+)"
    r" split_tokens:(?P<split_tokens>\d+) split_bytes:(?P<split_bytes>\d+)"
)


def val_scopes(text: str) -> list[dict[str, int]]:
    """Every val_scope line of a log, in order (the same line of several ranks counts once per scoring run: rank 0
    alone prints it)."""
    return [{k: int(v) for k, v in m.groupdict().items()} for m in VAL_SCOPE.finditer(text)]


def is_partial(scope: dict[str, int]) -> bool:
    return scope["scored_tokens"] != scope["split_tokens"] or scope["scored_bytes"] != scope["split_bytes"]


def scope_problems(seed: int, log: str, staged: bool) -> list[str]:
    """Why one seed's log cannot be a record's score: a scoring run on less than the whole validation split, or (our
    own staged script, which always prints it) no val_scope line at all."""
    scopes = val_scopes(log)
    if not scopes:
        return (
            [
                f"seed {seed}: its log has no val_scope line, so nothing shows that the whole validation split was "
                "scored (a log of an older training script: re-run its evaluate step)"
            ]
            if staged
            else []
        )
    out = []
    for s in scopes:
        if is_partial(s):
            out.append(
                f"seed {seed}: a partial validation score: {s['scored_tokens']:,} of the split's {s['split_tokens']:,}"
                f" tokens ({s['scored_bytes']:,} of {s['split_bytes']:,} bytes) were scored (config"
                " eval.val_tokens_limit, the script's VAL_TOKENS_LIMIT); a record scores the whole split: set"
                " eval.val_tokens_limit: 0 (a limited run is an experiment: stop at its metrics.json)"
            )
            break
    return out
