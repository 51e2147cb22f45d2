"""`OutputDir.publish` on a real S3 endpoint (moto server on loopback)."""

from __future__ import annotations

import hashlib
import os

import boto3
import s3fs

from pipeline.io.outputs import S3_MAX_PARTS, UPLOAD_PART_MB, OutputDir


def test_publish_uploads_a_large_file_in_bounded_parts_and_removes_the_local_copy(s3_env, tmp_path):
    """A COG larger than two parts goes up as a multipart upload of `UPLOAD_PART_MB` parts (s3fs's default
    would buffer 50 MiB parts, 10 at once), arrives byte for byte, and the staged file is gone."""
    boto3.client("s3").create_bucket(Bucket="publish")
    local = tmp_path / "mosaic.tif"
    local.write_bytes(os.urandom((2 * UPLOAD_PART_MB + 3) * 2**20))  # opaque bytes: only the transfer counts
    digest = hashlib.sha256(local.read_bytes()).hexdigest()
    OutputDir("s3://publish/job").publish(local, "mosaic.tif")
    assert not local.exists()
    head = boto3.client("s3").head_object(Bucket="publish", Key="job/mosaic.tif")
    assert head["ETag"].strip('"').endswith("-3")  # three parts: 8 + 8 + 3 MiB
    assert hashlib.sha256(s3fs.S3FileSystem().cat("publish/job/mosaic.tif")).hexdigest() == digest


def test_upload_parts_grow_to_fit_s3s_part_limit(s3_env):
    """A COG over 10,000 parts of `UPLOAD_PART_MB` (80 GB) gets larger parts instead of failing mid-upload."""
    out = OutputDir("s3://publish/job")
    assert out._upload_options(2**30)["chunksize"] == UPLOAD_PART_MB * 2**20
    size = 100 * 2**30
    assert out._upload_options(size)["chunksize"] * S3_MAX_PARTS >= size
    assert OutputDir("/tmp")._upload_options(size) == {}  # a local folder: no upload at all
