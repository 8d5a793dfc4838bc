"""Durable results (README, "Data on a volume, results that survive the pod"): the test pipeline with Snakemake's S3
storage plugin as default storage, against a local S3 stand-in (moto in server mode). Every product under results/
goes to the bucket as its job ends; a run on a new machine (an empty working folder, the same bucket) re-does only
the per-machine steps (data, FA3: `prepare`) and the record, and reuses the seeds already there; a seed missing from
the bucket is the only one that re-runs."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from conftest import REPO, env_with_venv, job_counts

pytestmark = pytest.mark.slow  # the pipeline end to end, twice (minutes)

boto3 = pytest.importorskip("boto3", reason="boto3 comes with the test extra (snakemake-storage-plugin-s3)")
pytest.importorskip("moto.server", reason="moto[server] comes with the test extra")

TEST_CONFIG = REPO / ".test" / "config.yaml"
BUCKET = "pgolf-durable"
PREFIX = "run1"
RECORD = "records/track_non_record_16mb/2026-01-01_pgolf_test"
POD_TRIGGERS = ["--rerun-triggers", "params", "input", "software-env", "code"]  # profiles/pod's


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on a free local port, with one bucket; its client."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out
        )
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    )
    try:
        for _ in range(100):
            try:
                client.create_bucket(Bucket=BUCKET)
                break
            except Exception:
                if proc.poll() is not None:
                    raise AssertionError(f"moto server exited: {log.read_text()[-2000:]}") from None
                time.sleep(0.2)
        else:
            raise AssertionError(f"moto server did not answer on {endpoint}: {log.read_text()[-2000:]}")
        yield {"endpoint": endpoint, "client": client}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def durable(s3, workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Snakemake on the test pipeline with the bucket as default storage; the credentials and endpoint come from the
    plugin's environment variables, as a pod's template would set them (not on the command line, not in a log)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2"]
    cmd += ["--configfile", str(TEST_CONFIG), *POD_TRIGGERS]
    cmd += ["--default-storage-provider", "s3", "--default-storage-prefix", f"s3://{BUCKET}/{PREFIX}", *args]
    env = {
        **env_with_venv(),
        "SNAKEMAKE_STORAGE_S3_ENDPOINT_URL": s3["endpoint"],
        "SNAKEMAKE_STORAGE_S3_ACCESS_KEY": "test",
        "SNAKEMAKE_STORAGE_S3_SECRET_KEY": "test",
    }
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def keys(s3) -> set[str]:
    pages = s3["client"].get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{PREFIX}/")
    return {o["Key"][len(PREFIX) + 1 :] for page in pages for o in page.get("Contents", [])}


def get(s3, key: str) -> bytes:
    return s3["client"].get_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}")["Body"].read()


def test_results_survive_the_pod_and_a_new_pod_reuses_them(s3, tmp_path):
    first = tmp_path / "pod1"
    first.mkdir()
    # the per-machine steps come first: a plan made without them would re-run every seed already in the storage
    refused = durable(s3, first, "-n", check=False)
    assert refused.returncode != 0 and "`prepare`" in refused.stdout + refused.stderr
    assert not keys(s3)

    assert job_counts(durable(s3, first, "prepare")) == {"data": 1, "fa3": 1, "prepare": 1}
    assert job_counts(durable(s3, first)) == {
        "ship_script": 1,
        "train": 2,
        "quantize": 2,
        "evaluate": 2,
        "record": 1,
        "record_archive": 1,
        "all": 1,
    }
    stored = keys(s3)
    for seed in (1, 2):
        for name in ("checkpoint.pt", "final_model.ptz", "metrics.json", "train.log", "eval.log"):
            assert f"results/test/seed_{seed}/{name}" in stored, name
    assert "results/test/ship/train_gpt.py" in stored and "logs/test/seed_1/train.log" in stored
    # the machine's own: the data, FA3 and the record folder stay local (the record also goes as one file)
    assert not any(k.startswith(("data/", "records/", "results/test/env/")) for k in stored), sorted(stored)
    record = first / RECORD
    submission = json.loads((record / "submission.json").read_text())
    with tarfile.open(fileobj=io.BytesIO(get(s3, "results/test/record.tar.gz"))) as tar:
        names = set(tar.getnames())
        assert f"{record.name}/train_gpt.py" in names and f"{record.name}/train_seed2.log" in names
        assert json.load(tar.extractfile(f"{record.name}/submission.json")) == submission
    metrics = get(s3, "results/test/seed_1/metrics.json")

    # a new pod: an empty working folder, the same bucket. Re-done: data, FA3, the record; reused: both seeds.
    second = tmp_path / "pod2"
    second.mkdir()
    assert job_counts(durable(s3, second, "prepare")) == {"data": 1, "fa3": 1, "prepare": 1}
    assert job_counts(durable(s3, second, "-n")) == {"record": 1, "record_archive": 1, "all": 1}
    assert job_counts(durable(s3, second)) == {"record": 1, "record_archive": 1, "all": 1}
    again = json.loads((second / RECORD / "submission.json").read_text())
    assert again["seed_results"] == submission["seed_results"] and again["val_bpb"] == submission["val_bpb"]
    assert get(s3, "results/test/seed_1/metrics.json") == metrics  # not re-made
    assert job_counts(durable(s3, second, "-n")) == {}

    # a pod that died during seed 2: only seed 2 re-runs on the next one
    for key in keys(s3):
        if key.startswith(("results/test/seed_2/", "results/test/.done/seed_2.")):
            s3["client"].delete_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}")
    third = tmp_path / "pod3"
    third.mkdir()
    durable(s3, third, "prepare")
    assert job_counts(durable(s3, third, "-n")) == {
        "train": 1,
        "quantize": 1,
        "evaluate": 1,
        "record": 1,
        "record_archive": 1,
        "all": 1,
    }
    plan = durable(s3, third, "-n", "-p")
    assert "--seed 2 " in plan.stdout and "--seed 1 " not in plan.stdout
