"""``python -m pgolf.prcheck``: ``pgolf check`` on the record folders a pull request to openai/parameter-golf adds,
as the GitHub Action (``action.yml``) runs it: the folders come from ``git diff --diff-filter=A BASE...HEAD`` under
``records/track_*/``, each is checked (parsed, never imported or run), the table goes to the job summary
(``$GITHUB_STEP_SUMMARY``, Markdown) and to stdout; the exit code is 1 when a folder has a violation."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from pgolf.check import check_table, format_report, inspect_record


def added_record_folders(repo: str | os.PathLike, base: str, head: str) -> list[Path]:
    """Record folders (``records/<track>/<folder>``) holding a file that ``head`` adds since its merge base with
    ``base``, in order."""
    proc = subprocess.run(
        ["git", "-C", str(repo), "diff", "--name-only", "--diff-filter=A", "-z", f"{base}...{head}"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise ValueError(f"git diff {base}...{head} in {repo} failed: {proc.stderr.strip()}")
    folders: list[Path] = []
    for name in proc.stdout.split("\0"):
        parts = Path(name).parts
        if len(parts) >= 4 and parts[0] == "records" and parts[1].startswith("track_"):
            folder = Path(repo) / parts[0] / parts[1] / parts[2]
            if folder not in folders:
                folders.append(folder)
    return folders


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pgolf.prcheck", description=__doc__.splitlines()[0])
    p.add_argument("--repo", default=".", help="the checked-out parameter-golf repository (with history)")
    p.add_argument("--base", required=True, help="the pull request's base commit")
    p.add_argument("--head", required=True, help="the pull request's head commit")
    p.add_argument("--summary", default=os.environ.get("GITHUB_STEP_SUMMARY"), help="Markdown file to append to")
    args = p.parse_args(argv)
    try:
        folders = added_record_folders(args.repo, args.base, args.head)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    if not folders:
        text = "pgolf check: this pull request adds no record folder under records/track_*/"
        print(text)
        if args.summary:
            with open(args.summary, "a", encoding="utf-8") as f:
                f.write(f"{text}\n")
        return 0
    reports = [inspect_record(folder) for folder in folders]
    print(check_table(reports, args.repo))
    for r in reports:
        print()
        print(format_report(r))
    if args.summary:
        with open(args.summary, "a", encoding="utf-8") as f:
            f.write("## pgolf check: the record folders this pull request adds\n\n")
            f.write(check_table(reports, args.repo, markdown=True) + "\n\n")
            for r in reports:
                f.write(f"<details><summary>{r.record_dir.name}: {r.verdict}</summary>\n\n```\n")
                f.write(format_report(r) + "\n```\n\n</details>\n\n")
    return 1 if any(r.violations for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
